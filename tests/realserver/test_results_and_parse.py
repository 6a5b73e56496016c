"""ChatResult's usage and timings, and parse(), against llama-cpp-python (issue 21, items 5, 7).

llama-cpp-python 0.3.36 sends no usage when streaming, and takes structured output as
``{"type": "json_object", "schema": ...}`` rather than OpenAI's ``json_schema`` (it answers 500 to
that). Until llmtap falls back to the shape it takes by itself (issue 21, item 6), the parse
tests here reach the server through a loopback proxy that rewrites ``response_format`` and
passes everything else, the answer included, through untouched.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, cast

import aiohttp
import orjson
import pytest
from aiohttp import web
from pydantic import BaseModel

from llmtap import LLMClient, LLMParseError, Message, Usage
from tests.realserver.conftest import realserver_client
from tests.realserver.llamaserver import LlamaServer

pytestmark = pytest.mark.realserver


class City(BaseModel):
    name: str
    population: int


class JsonObjectProxy:
    """A loopback proxy to llama-cpp-python that turns ``json_schema`` response formats into
    the ``json_object`` + ``schema`` form it takes; it counts the chat requests it passed on."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.chat_requests: list[dict[str, Any]] = []
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        response_format = body.get("response_format")
        if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
            schema = response_format["json_schema"]["schema"]
            body["response_format"] = {"type": "json_object", "schema": schema}
        self.chat_requests.append(body)
        assert self._session is not None
        async with self._session.post(
            self.upstream + request.path, data=orjson.dumps(body), headers=_JSON
        ) as upstream:
            reply = web.StreamResponse(status=upstream.status)
            reply.content_type = upstream.content_type
            await reply.prepare(request)
            async for piece in upstream.content.iter_any():
                await reply.write(piece)
            await reply.write_eof()
            return reply

    async def __aenter__(self) -> JsonObjectProxy:
        self._session = aiohttp.ClientSession()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._forward)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._runner is not None
        assert self._session is not None
        await self._runner.cleanup()
        await self._session.close()


_JSON = {"Content-Type": "application/json"}


QUESTION = [Message.user("Tell me about the water.")]
README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_stream_example_runs_on_llama_cpp_python(
    llama_server: LlamaServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The README's stream() example, run as written (asyncio.run included) against
    llama-cpp-python, which sends no usage when streaming: it prints the tokens (counted) and
    the speed instead of failing on a missing usage."""
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.DOTALL)
    example = next(block for block in blocks if "client.stream(" in block)
    monkeypatch.setenv("LLMTAP_ENDPOINT", llama_server.url)  # the example names no endpoint
    exec(compile(example, "README.md", "exec"), {"__name__": "readme"})
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(
        r"(stop|length): [1-9]\d* tokens, \d+\.\d tokens/s, first token after \d+\.\d\d s",
        last,
    ), last


async def test_streamed_and_whole_answers_agree_on_the_completion_tokens(
    client: LLMClient,
) -> None:
    """For one seed, the streamed answer's counted tokens are the non-streamed answer's
    reported completion_tokens (llama.cpp sends one token per chunk), and only the streamed
    one, which has a first token's time, has a speed."""
    streamed = await client.chat(QUESTION, seed=1, max_tokens=40)
    whole = await client.chat(QUESTION, seed=1, max_tokens=40, stream=False)
    tokens = whole.usage.completion_tokens
    assert tokens is not None
    assert streamed.usage == Usage(completion_tokens=tokens, source="counted")
    assert whole.usage.source == "server"
    assert streamed.timings.tokens_per_second is not None
    assert streamed.timings.tokens_per_second > 0
    assert whole.timings.tokens_per_second is None


@pytest.fixture
async def proxy(llama_server: LlamaServer) -> AsyncIterator[JsonObjectProxy]:
    async with JsonObjectProxy(llama_server.url) as running:
        yield running


@pytest.mark.parametrize("stream", [True, False])
async def test_parse_of_a_reply_cut_by_max_tokens_says_so_without_a_repair_round(
    proxy: JsonObjectProxy, stream: bool
) -> None:
    """The real model's JSON, cut by max_tokens=6, raises LLMParseError naming
    finish_reason='length' and max_tokens after one request: a repair round would be cut
    the same way."""
    async with realserver_client(cast(LlamaServer, proxy)) as client:  # only .url is read
        with pytest.raises(LLMParseError) as info:
            await client.parse([Message.user("A city?")], City, max_tokens=6, seed=1, stream=stream)
    assert len(proxy.chat_requests) == 1
    assert info.value.message == (
        "The model's reply was cut at max_tokens (finish_reason='length') after 6 tokens, "
        "before its JSON for City was complete; raise max_tokens and ask again. The reply so "
        "far is in .raw_text"
    )
    assert info.value.raw_text.startswith("{")
    assert [error["type"] for error in info.value.errors] == ["json_invalid"]
