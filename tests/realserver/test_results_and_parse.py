"""ChatResult's usage and timings, and parse(), against llama-cpp-python (issue 21, items 5-7);
the docs' stream() example against both servers.

llama-cpp-python 0.3.36 sends no usage when streaming, and takes structured output as
``{"type": "json_object", "schema": ...}`` rather than OpenAI's ``json_schema``: it answers 500
(a validation error naming ``response_format``) to that, and llmtap sends the request again at
once in the shape it takes, and from then on sends that shape to that server.
"""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from llmtap import AttemptFailed, HookRecord, LLMClient, LLMParseError, Message, Usage
from tests.docs.markdown import example
from tests.realserver.conftest import Served, realserver_client
from tests.realserver.llamaserver import LlamaServer

pytestmark = pytest.mark.realserver


class City(BaseModel):
    name: str
    population: int


class Flag(BaseModel):
    ok: bool


class Records:
    """A hook keeping every record, to count a call's attempts."""

    def __init__(self) -> None:
        self.records: list[HookRecord] = []

    def __call__(self, record: HookRecord) -> None:
        self.records.append(record)

    @property
    def kinds(self) -> list[str]:
        return [
            f"AttemptFailed({record.action})"
            if isinstance(record, AttemptFailed)
            else type(record).__name__
            for record in self.records
        ]


QUESTION = [Message.user("Tell me about the water.")]


def test_docs_stream_example_runs_on_both_servers(
    served: Served, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The docs' stream() example, run as written (asyncio.run included) against each
    server: llama-cpp-python sends no usage when streaming, and it prints the tokens
    (counted) and the speed instead of failing on a missing usage; llama-server sends both.
    A figure nothing measured is left out, as the example says: the example sends no seed,
    and an answer the model ends at once (no text) has no first token and no speed (CI saw
    it once on llama-server)."""
    block = example("elif isinstance(event, TextDelta):")
    monkeypatch.setenv("LLMTAP_ENDPOINT", served.url)  # the example names no endpoint
    exec(compile(block.body, block.where, "exec"), {"__name__": "readme"})
    last = capsys.readouterr().out.splitlines()[-1]
    assert re.fullmatch(
        r"(stop|length): \d+ tokens(, \d+\.\d tokens/s)?(, first token after \d+\.\d\d s)?",
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


async def test_parse_takes_the_shape_llama_cpp_python_takes(llama_server: LlamaServer) -> None:
    """parse() on llama-cpp-python: its 500 to ``json_schema`` is not retried but answered by
    the same request in the ``json_object`` + ``schema`` shape, at once; the grammar the
    server builds from the schema gives a valid answer (random weights, but only JSON of the
    schema's shape can come out); and the next parse() sends that shape first."""
    records = Records()
    async with realserver_client(llama_server, hooks=[records]) as client:
        flag = await client.parse([Message.user("OK?")], Flag, max_tokens=60, seed=3)
        first = records.kinds
        refused = records.records[1]
        records.records.clear()
        await client.parse([Message.user("OK?")], Flag, max_tokens=60, seed=3)
    assert flag == Flag(ok=True)
    assert first == [
        "RequestStarted",
        "AttemptFailed(refit)",
        "FirstChunk",
        "RequestFinished",
    ]
    assert isinstance(refused, AttemptFailed)
    assert getattr(refused.error, "status_code", None) == 500
    assert "response_format" in (getattr(refused.error, "server_message", None) or "")
    assert records.kinds == ["RequestStarted", "FirstChunk", "RequestFinished"]


@pytest.mark.parametrize("stream", [True, False])
async def test_parse_of_a_reply_cut_by_max_tokens_says_so_without_a_repair_round(
    llama_server: LlamaServer, stream: bool
) -> None:
    """The real model's JSON, cut by max_tokens=6, raises LLMParseError naming
    finish_reason='length' and max_tokens after one request (its shape refitted once): a
    repair round would be cut the same way."""
    records = Records()
    async with realserver_client(llama_server, hooks=[records]) as client:
        with pytest.raises(LLMParseError) as info:
            await client.parse([Message.user("A city?")], City, max_tokens=6, seed=1, stream=stream)
    assert records.kinds.count("RequestStarted") == 1
    assert info.value.message == (
        "The model's reply was cut at max_tokens (finish_reason='length') after 6 tokens, "
        "before its JSON for City was complete; raise max_tokens and ask again. The reply so "
        "far is in .raw_text"
    )
    assert info.value.raw_text.startswith("{")
    assert [error["type"] for error in info.value.errors] == ["json_invalid"]
