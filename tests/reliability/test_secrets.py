"""Secrets never leak: a run with many faults, every logger at DEBUG (aiohttp's and asyncio's
included, the loop in debug mode), stdout and stderr captured, and everything the run
produced — log lines, exception messages, reprs and tracebacks, results, reports, the config's
repr and JSON dump — scanned for the secret."""

from __future__ import annotations

import asyncio
import logging
import traceback
from typing import Any

import pytest
from pydantic import BaseModel

from llmtap import LLMClient, LLMConfig, LLMError, LLMResponseError, Message
from llmtap.testing import Reply, TestServer, no_retry_waits

KEY = "sk-llmtap-SECRET-7f3a9c"
WRONG_KEY = "sk-llmtap-WRONG-0b1d2e"
HELLO = [Message.user("hello")]
DIALECTS = ["openai", "ollama", "llamacpp", "vllm"]

#: One reply per fault; each call below takes one (retries take the next, a good one).
FAULTS = [
    Reply(status=503, headers={"Retry-After": "1"}),
    Reply(status=401, error_message="bad key"),
    Reply(status=400, error_message="bad request"),
    Reply(text="a b c d", reset_after=2),
    Reply(text="a b c d", malformed_after=0),
    Reply(text="a b c d", error_after=0),
    Reply(text="a b c d", truncate_after=2),
    Reply(raw_body=b"<html>login</html>", content_type="text/html"),
    Reply(text="a b c d", delay_before_headers=5.0),
    Reply(text="a b c d", oversized_line=8192),
    Reply(text="a b c d", invalid_utf8_after=1),
]


class Emitted:
    """Every piece of text a run produced, for scanning."""

    def __init__(self) -> None:
        self.texts: list[str] = []
        self.errors = 0
        self.results = 0

    def add(self, *texts: str) -> None:
        self.texts.extend(texts)

    def error(self, error: BaseException) -> None:
        self.errors += 1
        self.add(str(error), repr(error), "".join(traceback.format_exception(error)))
        for cause in (error.__cause__, error.__context__):
            if cause is not None:
                self.add(str(cause), repr(cause), repr(vars(cause)) if vars(cause) else "")
        self.add(repr(vars(error)))

    def model(self, value: BaseModel) -> None:
        self.results += 1
        self.add(str(value), repr(value), value.model_dump_json())

    def leaks(self, *secrets: str) -> list[str]:
        return [text for text in self.texts for secret in secrets if secret in text]


@pytest.fixture
def loud_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every logger, llmtap's, aiohttp's and asyncio's, at DEBUG into caplog (which puts the
    levels back afterwards)."""
    caplog.set_level(logging.DEBUG)
    for name in ("llmtap", "aiohttp", "aiohttp.client", "aiohttp.internal", "asyncio"):
        caplog.set_level(logging.DEBUG, logger=name)
    return caplog


async def _run(client: LLMClient, call: str, emitted: Emitted) -> None:
    """One call; its result or its error goes to ``emitted``."""
    try:
        if call == "stream_chat_with_retry":
            async for chunk in client.stream_chat_with_retry(HELLO):
                emitted.add(repr(chunk))
        elif call == "stream":
            async with client.stream(HELLO, resume=True) as stream:
                async for event in stream:
                    emitted.add(repr(event))
                emitted.model(await stream.result())
        elif call == "chat_whole":
            emitted.model(await client.chat(HELLO, stream=False))
        else:
            emitted.model(await client.chat(HELLO))
    except LLMError as error:
        emitted.error(error)


CALLS = ["stream_chat_with_retry", "stream", "chat_stream", "chat_whole"]


async def _faulty_run(server: TestServer, key: str, emitted: Emitted) -> None:
    """Every fault on every call path, then preflight, listing and embeddings."""
    config = LLMConfig(
        endpoint=server.url,
        model="llama3.2",
        api_key=key,
        headers={"X-Api-Key": key, "X-Trace": "visible"},
        first_token_timeout=0.3,
        max_retries=1,
    )
    emitted.add(repr(config), str(config), config.model_dump_json(), repr(config.model_dump()))
    async with LLMClient(config) as client:
        emitted.add(repr(client))
        for call in CALLS:
            for fault in FAULTS:
                server.script(fault, Reply(text="fine answer"))
                await _run(client, call, emitted)
        for step in (client.preflight_check, client.list_models, lambda: client.embed("x")):
            try:
                value: Any = await step()
            except LLMError as error:
                emitted.error(error)
            else:
                emitted.add(repr(value))
                if isinstance(value, BaseModel):
                    emitted.model(value)


@pytest.mark.parametrize("dialect", DIALECTS)
async def test_api_key_never_leaks(
    dialect: str, loud_logs: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]
) -> None:
    """Neither the right key nor a wrong one appears in any log line, output, error, repr,
    result, report or config dump of a run full of faults."""
    asyncio.get_running_loop().set_debug(True)
    emitted = Emitted()
    with no_retry_waits():
        async with TestServer(dialect=dialect, api_key=KEY) as server:  # type: ignore[arg-type]
            await _faulty_run(server, KEY, emitted)
            await _faulty_run(server, WRONG_KEY, emitted)
            sent = {r.headers.get("authorization") for r in server.requests}
    out, err = capfd.readouterr()
    logged = [record.getMessage() for record in loud_logs.records]
    logged += [repr(getattr(record, "llmtap", "")) for record in loud_logs.records]
    assert {f"Bearer {KEY}", f"Bearer {WRONG_KEY}"} <= sent  # the secrets were in play
    assert emitted.errors >= len(FAULTS) * len(CALLS)  # the run did fail, many ways
    assert any(name.startswith("llm_retry") for name in logged)
    assert emitted.leaks(KEY, WRONG_KEY) == []
    assert [line for line in logged if KEY in line or WRONG_KEY in line] == []
    assert KEY not in out + err
    assert WRONG_KEY not in out + err


def test_config_repr_and_dump_hide_the_key_and_secret_headers() -> None:
    """LLMConfig's repr, str, dict and JSON dumps show neither api_key nor secret headers,
    and keep ordinary headers readable."""
    config = LLMConfig(
        api_key=KEY, headers={"Authorization": f"Bearer {KEY}", "X-Api-Key": KEY, "X-Trace": "t"}
    )
    dumps = [repr(config), str(config), repr(config.model_dump()), config.model_dump_json()]
    assert [dump for dump in dumps if KEY in dump] == []
    assert all("X-Trace" in dump for dump in dumps)
    assert config.model_dump()["headers"] == {
        "Authorization": "***",
        "X-Api-Key": "***",
        "X-Trace": "t",
    }


PASSWORD = "hunter2-llmtap-secret"


async def test_endpoint_password_never_leaks(loud_logs: pytest.LogCaptureFixture) -> None:
    """A password in the endpoint's userinfo appears in no repr, dump, report, error or log."""
    emitted = Emitted()
    async with TestServer(dialect="openai") as server:
        endpoint = server.url.replace("http://", f"http://user:{PASSWORD}@")
        config = LLMConfig(endpoint=endpoint, model="gpt-4o-mini", verify=False, max_retries=0)
        emitted.add(repr(config), str(config), config.model_dump_json())
        async with LLMClient(config) as client:
            emitted.add(repr(client))
            server.script(Reply(status=400))
            await _run(client, "chat_stream", emitted)
            report = await client.preflight_check()
            emitted.model(report)
    logged = [record.getMessage() for record in loud_logs.records]
    assert emitted.errors == 1
    assert [text for text in emitted.texts + logged if PASSWORD in text] == []


async def test_error_from_a_server_echoing_the_key_does_not_repeat_it() -> None:
    """A server whose error message quotes the key it got (some proxies do) does not put the
    key into llmtap's error, whose message and server_message redact it."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=401, error_message=f"Invalid API key: {KEY}"))
        async with LLMClient(endpoint=server.url, model="m", api_key=KEY, max_retries=0) as client:
            with pytest.raises(LLMResponseError) as info:
                await client.chat(HELLO)
    emitted = Emitted()
    emitted.error(info.value)
    assert emitted.leaks(KEY) == []
