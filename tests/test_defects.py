"""One test per item of the design sketch's DEFECTS.md; each fails on the sketch's behaviour."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from pydantic import ValidationError

from llmtap import (
    LLMConfig,
    LLMConnectionError,
    LLMRateLimitError,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    Message,
    ToolCall,
)
from llmtap.testing import Reply, TestServer, ToolCallSpec
from tests.conftest import SilentServer, make_client

HELLO = [Message.user("hello")]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(
        (chunk["choices"][0]["delta"].get("content") or "")
        for chunk in chunks
        if chunk.get("choices")
    )


async def test_defect_01_no_duplicated_output_on_retry(no_waits: None) -> None:
    """A stream that breaks after output is not replayed: the caller sees each token once and
    gets LLMStreamInterrupted with the partial text; only one request was made."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["one", " two", " three", " four"], reset_after=3))
        received: list[dict[str, Any]] = []
        async with make_client(server.url) as client:
            with pytest.raises(LLMStreamInterrupted) as info:
                async for chunk in client.stream_chat_with_retry(HELLO):
                    received.append(chunk)
        assert _text(received) == "one two"
        assert info.value.partial_text == "one two"
        assert info.value.chunks_received == 3
        assert isinstance(info.value.__cause__, LLMConnectionError)
        assert len(server.chat_requests) == 1


async def test_defect_02_rate_limit_is_retried_honouring_retry_after() -> None:
    """429 is retried after the Retry-After the server asked for (retry-after-ms here)."""
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(status=429, headers={"retry-after-ms": "300"}, error_message="slow down"),
            Reply(text="fine now"),
        )
        async with make_client(server.url, retry_backoff_base=0.0) as client:
            started = time.monotonic()
            chunks = [chunk async for chunk in client.stream_chat_with_retry(HELLO)]
            waited = time.monotonic() - started
        assert _text(chunks) == "fine now"
        assert len(server.chat_requests) == 2
        assert waited >= 0.3


async def test_defect_02_retry_after_beyond_the_cap_is_raised_not_waited() -> None:
    """A Retry-After longer than 120 s is not waited for; the error says how long."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=429, headers={"Retry-After": "600"}, error_message="later"))
        async with make_client(server.url) as client:
            with pytest.raises(LLMRateLimitError) as info:
                _ = [chunk async for chunk in client.stream_chat_with_retry(HELLO)]
        assert info.value.retry_after == 600.0
        assert info.value.status_code == 429
        assert len(server.chat_requests) == 1


async def test_defect_03_garbage_stream_raises_stream_error() -> None:
    """A chunk that is not JSON raises LLMStreamError naming the chunk, not a silent success."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="hi", malformed_after=0))
        async with make_client(server.url) as client:
            with pytest.raises(LLMStreamError) as info:
                _ = [chunk async for chunk in client.stream_chat(HELLO)]
        assert "not JSON" in info.value.message
        assert "oops" in info.value.message


async def test_defect_03_error_object_is_raised_not_yielded() -> None:
    """vLLM's data: {"error": ...} (followed by [DONE]) raises with the server's message."""
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(text="hi", error_after=0, stream_error_message="engine died"))
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError) as info:
                _ = [chunk async for chunk in client.stream_chat(HELLO)]
        assert info.value.server_message == "engine died"
        assert info.value.status_code == 500


async def test_defect_03_missing_terminator_is_not_success() -> None:
    """A body that ends with neither [DONE] nor a finish_reason is an error."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c"], truncate_after=2))
        async with make_client(server.url) as client:
            with pytest.raises(LLMStreamInterrupted) as info:
                _ = [chunk async for chunk in client.stream_chat(HELLO)]
        assert isinstance(info.value.__cause__, LLMStreamError)
        assert info.value.partial_text == "a"


async def test_defect_04_mid_stream_reset_keeps_its_type() -> None:
    """A reset while reading is an LLMConnectionError (the cause of the interruption), and a
    reset before any output is retried as a connection failure."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="x y", reset_after=0), Reply(text="second try"))
        async with make_client(server.url) as client:
            with pytest.raises(LLMConnectionError):
                _ = [chunk async for chunk in client.stream_chat(HELLO)]
            chunks = [chunk async for chunk in client.stream_chat_with_retry(HELLO)]
        assert _text(chunks) == "second try"


async def test_defect_05_preflight_timeout_is_reported_as_timeout(
    silent_server: SilentServer,
) -> None:
    """A server that accepts but never answers gives LLMTimeoutError, not 'is it running?'."""
    async with make_client(silent_server.url, preflight_timeout=0.3) as client:
        with pytest.raises(LLMTimeoutError) as info:
            await client.preflight_check()
    assert info.value.deadline == "preflight"
    assert "running" not in info.value.message


@pytest.mark.parametrize("dialect", ["llamacpp", "vllm", "openai"])
async def test_defect_06_preflight_works_beyond_ollama(dialect: str) -> None:
    """Servers without /api/tags are checked through /v1/models."""
    async with TestServer(dialect=dialect, models=["m1"]) as server:
        async with make_client(server.url, model="m1") as client:
            report = await client.preflight_check()
    assert report.model == "m1"
    assert report.server == {"llamacpp": "llama.cpp", "vllm": "vllm"}.get(
        dialect, "openai-compatible"
    )


async def test_defect_06_bare_name_is_latest_not_any_tag() -> None:
    """On Ollama, 'qwen3' means qwen3:latest; it does not match qwen3:8b."""
    async with TestServer(dialect="ollama", models=["qwen3:8b"]) as server:
        async with make_client(server.url, model="qwen3") as client:
            with pytest.raises(LLMResponseError) as info:
                await client.preflight_check()
    assert "ollama pull qwen3" in info.value.message
    assert "qwen3:8b" in info.value.message


async def test_defect_07_sse_decoded_per_spec_over_split_reads() -> None:
    """Comments, CRLF-free pings and UTF-8 split across reads decode to the exact text."""
    text = "naïve café — 日本語 🚀 done"
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(text=text, split_writes=1, pings=1))
        async with make_client(server.url) as client:
            chunks = [chunk async for chunk in client.stream_chat(HELLO)]
    assert _text(chunks) == text


async def test_defect_08_first_token_and_idle_deadlines_are_separate() -> None:
    """A slow first byte trips first_token_timeout; a stall mid-stream trips idle_timeout."""
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(text="late", delay_before_headers=2.0),
            Reply(chunks=["a", "b", "c"], stall_after=(2, 2.0)),
        )
        async with make_client(server.url, first_token_timeout=0.3, idle_timeout=0.3) as client:
            with pytest.raises(LLMTimeoutError) as first:
                _ = [chunk async for chunk in client.stream_chat(HELLO)]
            with pytest.raises(LLMStreamInterrupted) as idle:
                _ = [chunk async for chunk in client.stream_chat(HELLO)]
    assert first.value.deadline == "first_token"
    assert first.value.timeout == 0.3
    assert isinstance(idle.value.__cause__, LLMTimeoutError)
    assert idle.value.__cause__.deadline == "idle"


async def test_defect_09_one_assembled_result() -> None:
    """Callers get one ChatResult with text, tool calls, finish reason and usage, not raw
    dicts to stitch together (here from llama.cpp's fragmented tool-call chunks)."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(
            Reply(
                text="Checking.",
                tool_calls=[ToolCallSpec("get_weather", {"city": "Oslo"}, id="c1")],
                usage=(9, 5),
            )
        )
        async with make_client(server.url) as client:
            result = await client.chat(HELLO)
    assert result.text == "Checking."
    assert result.tool_calls == (ToolCall(id="c1", name="get_weather", arguments={"city": "Oslo"}),)
    assert result.finish_reason == "tool_calls"
    assert result.usage is not None
    assert (result.usage.prompt_tokens, result.usage.completion_tokens) == (9, 5)


async def test_defect_10_api_key_is_sent_as_bearer_and_never_shown() -> None:
    """The key goes in the Authorization header and appears in no error text."""
    key = "sk-test-abcdef123456"
    async with TestServer(dialect="vllm", api_key=key) as server:
        async with make_client(server.url, api_key=key) as client:
            chunks = [chunk async for chunk in client.stream_chat(HELLO)]
        assert _text(chunks) == "echo: hello"
        assert server.chat_requests[0].headers["authorization"] == f"Bearer {key}"
        async with make_client(server.url, api_key="sk-wrong-999999") as client:
            with pytest.raises(LLMResponseError) as info:
                _ = [chunk async for chunk in client.stream_chat(HELLO)]
            assert "sk-wrong-999999" not in repr(client)
    assert info.value.status_code == 401
    assert "LLMTAP_API_KEY" in info.value.message
    for text in (str(info.value), repr(info.value)):
        assert "sk-wrong-999999" not in text


def test_defect_11_negative_retries_rejected_at_construction() -> None:
    """max_retries < 0 fails when the config is built, never as `raise None` later."""
    with pytest.raises(ValidationError) as info:
        LLMConfig(max_retries=-1)
    assert info.value.errors()[0]["loc"] == ("max_retries",)


async def test_defect_12_abandoned_stream_releases_its_connection() -> None:
    """Breaking out of the loop gives the connection back at once, not at garbage collection."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=[f"w{i} " for i in range(50)], delay_between=0.05))
        async with make_client(server.url) as client:
            async for _chunk in client.stream_chat(HELLO):
                break
            await asyncio.sleep(0.05)
            assert client.connections_in_use == 0
