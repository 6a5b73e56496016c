"""LLMClient against the loopback test server: dialects, errors, retries, deadlines, pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import pytest

from llmtap import (
    LLMClient,
    LLMConfig,
    LLMConnectionError,
    LLMError,
    LLMModelError,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    LLMUsageError,
    Message,
)
from llmtap.testing import Reply, TestServer, ToolCallSpec
from tests.conftest import SilentServer, make_client

HELLO = [Message.user("hello")]


def _text(chunks: list[dict[str, Any]]) -> str:
    parts = []
    for chunk in chunks:
        if chunk.get("choices"):
            parts.append(chunk["choices"][0].get("delta", {}).get("content") or "")
        elif isinstance(chunk.get("message"), dict):
            parts.append(chunk["message"].get("content") or "")
    return "".join(parts)


async def _collect(client: LLMClient, **params: Any) -> list[dict[str, Any]]:
    return [chunk async for chunk in client.stream_chat(HELLO, **params)]


async def _collect_retry(client: LLMClient, **params: Any) -> list[dict[str, Any]]:
    return [chunk async for chunk in client.stream_chat_with_retry(HELLO, **params)]


# --- dialects ------------------------------------------------------------------------------


@pytest.mark.parametrize("dialect", ["openai", "vllm", "llamacpp", "ollama"])
async def test_streams_text_from_every_dialect(dialect: str) -> None:
    """The same reply streams to the same text from each server's /v1 chunk shape."""
    async with TestServer(dialect=dialect) as server:
        server.script(Reply(text="The sky is blue."))
        async with make_client(server.url) as client:
            chunks = await _collect(client)
    assert _text(chunks) == "The sky is blue."
    assert chunks[-1]["choices"] == [] or chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_ollama_native_ndjson_stream() -> None:
    """api='ollama' talks /api/chat and yields its NDJSON lines, ending at done: true."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="native words here"))
        async with make_client(server.url, api="ollama") as client:
            chunks = await _collect(client, num_ctx=8192)
        request = server.chat_requests[0]
    assert request.path == "/api/chat"
    assert request.json["options"]["num_ctx"] == 8192
    assert request.json["messages"] == [{"role": "user", "content": "hello"}]
    assert _text(chunks) == "native words here"
    assert chunks[-1]["done"] is True


async def test_ollama_native_error_line_raises() -> None:
    """Ollama's native {"error": "..."} line with status 200 raises with its text."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="a b", error_after=0, stream_error_message="out of memory"))
        async with make_client(server.url, api="ollama") as client:
            with pytest.raises(LLMResponseError) as info:
                await _collect(client)
    assert info.value.server_message == "out of memory"


async def test_params_pass_through_to_the_payload() -> None:
    """Extra keyword parameters land in the request body unchanged."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url, max_tokens=64) as client:
            await _collect(client, seed=7, stop=["\n"], tool_choice="auto", top_p=0.9)
        body = server.chat_requests[0].json
    assert body["seed"] == 7
    assert body["stop"] == ["\n"]
    assert body["tool_choice"] == "auto"
    assert body["top_p"] == 0.9
    assert body["max_tokens"] == 64
    assert body["stream"] is True
    assert body["model"] == "llama3.2"


async def test_temperature_is_left_to_the_server_by_default() -> None:
    """With no temperature configured none is sent, so the model's own tuned default wins."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            await _collect(client)
        body = server.chat_requests[0].json
    assert "temperature" not in body


async def test_a_configured_temperature_is_sent() -> None:
    """LLMConfig(temperature=0.7) restores the old behaviour: it goes out with every request."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url, temperature=0.7) as client:
            await _collect(client)
        body = server.chat_requests[0].json
    assert body["temperature"] == 0.7


async def test_tools_are_sent_and_tool_call_chunks_yielded() -> None:
    """Tool schemas go in the payload; fragmented tool-call chunks reach the caller as sent."""
    schema = {"type": "function", "function": {"name": "get_weather", "parameters": {}}}
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(tool_calls=[ToolCallSpec("get_weather", {"city": "Paris"})]))
        async with make_client(server.url) as client:
            chunks = [c async for c in client.stream_chat(HELLO, tools=[schema])]
        assert server.chat_requests[0].json["tools"] == [schema]
    fragments = [
        call["function"].get("arguments", "")
        for chunk in chunks
        if chunk.get("choices")
        for call in chunk["choices"][0].get("delta", {}).get("tool_calls") or ()
    ]
    assert "".join(fragments) == '{"city":"Paris"}'


# --- stream_options ------------------------------------------------------------------------


async def test_usage_is_requested_with_stream_options() -> None:
    """Streaming requests ask for usage, and the usage chunk is yielded."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="a b", usage=(5, 2)))
        async with make_client(server.url) as client:
            chunks = await _collect(client)
        assert server.chat_requests[0].json["stream_options"] == {"include_usage": True}
    assert chunks[-1]["usage"] == {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}


async def test_callers_stream_options_are_kept() -> None:
    """A caller's own stream_options replace the default."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            await _collect(client, stream_options={"include_usage": False})
        assert server.chat_requests[0].json["stream_options"] == {"include_usage": False}


async def test_server_rejecting_stream_options_is_asked_again_and_remembered() -> None:
    """A 400 naming stream_options resends without it, and later requests omit it."""
    async with TestServer(dialect="openai", reject_stream_options=True) as server:
        async with make_client(server.url, max_retries=0) as client:
            first = await _collect(client)
            second = await _collect(client)
        bodies = [request.json for request in server.chat_requests]
    assert _text(first) == _text(second) == "echo: hello"
    assert ["stream_options" in body for body in bodies] == [True, False, False]


# --- odd bodies ----------------------------------------------------------------------------


async def test_json_answer_to_a_stream_request_is_accepted() -> None:
    """A server that ignores stream: true gives one whole answer, yielded as one chunk."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="whole answer", json_instead_of_stream=True))
        async with make_client(server.url) as client:
            chunks = await _collect(client)
    assert len(chunks) == 1
    assert _text(chunks) == "whole answer"
    assert chunks[0]["choices"][0]["finish_reason"] == "stop"


async def test_html_page_is_not_an_llm_api() -> None:
    """A 200 with an HTML body raises LLMResponseError saying the endpoint is wrong."""
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(raw_body=b"<html><body>Welcome</body></html>", content_type="text/html")
        )
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError) as info:
                await _collect(client)
    assert "not an LLM answer" in info.value.message
    assert "text/html" in info.value.message


async def test_empty_200_body_is_an_error_without_answer() -> None:
    """An event stream that closes with no chunks (llama-cpp-python, prompt over context)."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(text="never", truncate_after=0))
        async with make_client(server.url) as client:
            with pytest.raises(LLMStreamError) as info:
                await _collect(client)
    assert type(info.value) is LLMStreamError
    assert "without an answer" in info.value.message


@pytest.mark.parametrize("style", ["event", "legacy_line", "data"])
async def test_every_in_stream_error_style_raises(style: str) -> None:
    """event: error, old llama.cpp 'error:' lines and data error objects all raise."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(
            Reply(
                text="x",
                error_after=0,
                stream_error_style=style,
                stream_error_message="slot crashed",
            )
        )
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError) as info:
                await _collect(client)
    assert info.value.server_message == "slot crashed"


async def test_oversized_line_raises_stream_error() -> None:
    """A line over max_line_bytes raises instead of buffering without bound."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(oversized_line=200_000))
        async with make_client(server.url, max_line_bytes=65536) as client:
            with pytest.raises(LLMStreamError) as info:
                await _collect(client)
    assert "max_line_bytes" in info.value.message


async def test_invalid_utf8_chunk_raises_stream_error() -> None:
    """Bytes that are not UTF-8 inside a chunk raise LLMStreamError naming the chunk."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="a b", invalid_utf8_after=0))
        async with make_client(server.url) as client:
            with pytest.raises(LLMStreamError):
                await _collect(client)


async def test_done_without_finish_reason_is_not_a_complete_answer() -> None:
    """[DONE] with no finish_reason before it (llama-cpp-python cut by a newer request) is a
    stream that ended early, not a success."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b"], finish_reason=None))
        async with make_client(server.url) as client:
            with pytest.raises(LLMStreamInterrupted) as info:
                await _collect(client)
    assert isinstance(info.value.__cause__, LLMStreamError)
    assert "[DONE] came before any finish_reason" in info.value.__cause__.message
    assert info.value.partial_text == "ab"


async def test_truncated_after_output_is_interrupted_with_cause() -> None:
    """Cut mid-chunk after output: LLMStreamInterrupted whose cause is a connection error."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c", "d"], cut_mid_chunk_after=2))
        async with make_client(server.url) as client:
            with pytest.raises(LLMStreamInterrupted) as info:
                await _collect_retry(client)
    assert isinstance(info.value.__cause__, LLMConnectionError)
    assert info.value.partial_text == "a"


# --- retries -------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
async def test_retryable_statuses_are_retried(status: int, no_waits: None) -> None:
    """Each transient status is retried and the next answer is delivered."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=status, error_message="busy"), Reply(text="ok"))
        async with make_client(server.url) as client:
            chunks = await _collect_retry(client)
        assert len(server.chat_requests) == 2
    assert _text(chunks) == "ok"


@pytest.mark.parametrize("status", [400, 401, 404, 422])
async def test_client_errors_raise_at_once(status: int, no_waits: None) -> None:
    """Other 4xx are raised after one request, with the server's message."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=status, error_message="you did it wrong"))
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError) as info:
                await _collect_retry(client)
        assert len(server.chat_requests) == 1
    assert info.value.status_code == status
    assert info.value.server_message == "you did it wrong"


async def test_retries_stop_after_max_retries(no_waits: None) -> None:
    """max_retries=2 means three attempts, then the last error."""
    async with TestServer(dialect="openai") as server:
        server.script(*[Reply(status=503, error_message=f"busy {n}") for n in range(5)])
        async with make_client(server.url, max_retries=2) as client:
            with pytest.raises(LLMResponseError) as info:
                await _collect_retry(client)
        assert len(server.chat_requests) == 3
    assert info.value.server_message == "busy 2"


async def test_x_should_retry_false_stops_retry(no_waits: None) -> None:
    """x-should-retry: false on a 503 raises after one request."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=503, headers={"x-should-retry": "false"}), Reply(text="no"))
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError):
                await _collect_retry(client)
        assert len(server.chat_requests) == 1


async def test_insufficient_quota_is_not_retried(no_waits: None) -> None:
    """A 429 whose body says the quota is exhausted raises at once."""
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(status=429, error_message="quota", error_code="insufficient_quota"),
            Reply(text="never"),
        )
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError) as info:
                await _collect_retry(client)
        assert len(server.chat_requests) == 1
    assert info.value.error_code == "insufficient_quota"


async def test_in_stream_error_before_output_is_retried_by_its_code(no_waits: None) -> None:
    """vLLM's error object with code 500 before any chunk is retried like a 500."""
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(text="x", error_after=0, stream_error_code=500), Reply(text="ok"))
        async with make_client(server.url) as client:
            chunks = await _collect_retry(client)
        assert len(server.chat_requests) == 2
    assert _text(chunks) == "ok"


async def test_in_stream_error_without_code_is_not_retried(no_waits: None) -> None:
    """An error object with no numeric code is raised after one request."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="x", error_after=0, stream_error_code=None), Reply(text="ok"))
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError):
                await _collect_retry(client)
        assert len(server.chat_requests) == 1


async def test_reset_before_headers_is_retried(no_waits: None) -> None:
    """A connection reset before the response headers is a retried connection failure."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(reset_before_headers=True), Reply(text="ok"))
        async with make_client(server.url) as client:
            chunks = await _collect_retry(client)
        assert len(server.chat_requests) == 2
    assert _text(chunks) == "ok"


async def test_first_token_timeout_before_output_is_retried(no_waits: None) -> None:
    """A timeout before the first chunk is retried."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="slow", delay_before_headers=1.0), Reply(text="fast"))
        async with make_client(server.url, first_token_timeout=0.2) as client:
            chunks = await _collect_retry(client)
    assert _text(chunks) == "fast"


async def test_each_retry_logs_one_structured_event(
    no_waits: None, caplog: pytest.LogCaptureFixture
) -> None:
    """llm_retry is logged once per retry with attempt, wait and error."""
    caplog.set_level(logging.WARNING, logger="llmtap")
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=503, error_message="busy"), Reply(status=502), Reply(text="k"))
        async with make_client(server.url) as client:
            await _collect_retry(client)
    events = [r for r in caplog.records if r.getMessage().startswith("llm_retry")]
    assert [r.llmtap["attempt"] for r in events] == [1, 2]  # type: ignore[attr-defined]
    assert events[0].llmtap["wait"] == 0.0  # type: ignore[attr-defined]
    assert "503" in events[0].llmtap["error"]  # type: ignore[attr-defined]


async def test_connection_refused_is_retried_then_raised(
    closed_port_url: str, no_waits: None, caplog: pytest.LogCaptureFixture
) -> None:
    """Nothing listening: LLMConnectionError saying how to start the server, after retries."""
    caplog.set_level(logging.WARNING, logger="llmtap")
    async with make_client(closed_port_url, max_retries=2) as client:
        with pytest.raises(LLMConnectionError) as info:
            await _collect_retry(client)
    assert "ollama serve" in info.value.message
    assert type(info.value) is LLMConnectionError
    assert len([r for r in caplog.records if r.getMessage().startswith("llm_retry")]) == 2


# --- deadlines -----------------------------------------------------------------------------


async def test_total_timeout_bounds_the_whole_request() -> None:
    """A slowly paced stream trips total_timeout even though no gap passes idle_timeout."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=[f"w{i}" for i in range(40)], delay_between=0.05))
        async with make_client(server.url, total_timeout=0.4) as client:
            with pytest.raises(LLMStreamInterrupted) as info:
                await _collect(client)
    cause = info.value.__cause__
    assert isinstance(cause, LLMTimeoutError)
    assert (cause.deadline, cause.timeout) == ("total", 0.4)


async def test_total_timeout_passing_while_the_caller_holds_the_stream_ends_it() -> None:
    """The total deadline passes between reads, with nothing left buffered: the next read
    raises it at once instead of waiting for bytes that the closed connection never brings."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c"], stall_after=(2, 5.0)))
        async with make_client(server.url, total_timeout=0.3, idle_timeout=30.0) as client:
            loop = asyncio.get_running_loop()
            stream = client.stream_chat(HELLO)
            got = [await anext(stream)]
            while _text(got) != "a":
                got.append(await anext(stream))
            await asyncio.sleep(0.5)  # the deadline passes while the caller holds the stream
            started = loop.time()
            with pytest.raises(LLMStreamInterrupted) as info:
                await asyncio.wait_for(anext(stream), 3.0)
            waited = loop.time() - started
    cause = info.value.__cause__
    assert isinstance(cause, LLMTimeoutError)
    assert (cause.deadline, cause.timeout) == ("total", 0.3)
    assert waited < 1.0


async def test_idle_timeout_applies_from_the_first_chunk_on() -> None:
    """A stall after the first chunks trips idle_timeout, not the far longer first-token one."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c"], stall_after=(2, 3.0)))
        async with make_client(server.url, first_token_timeout=30.0, idle_timeout=0.3) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(LLMStreamInterrupted) as info:
                await _collect(client)
            waited = asyncio.get_running_loop().time() - started
    cause = info.value.__cause__
    assert isinstance(cause, LLMTimeoutError)
    assert (cause.deadline, cause.timeout) == ("idle", 0.3)
    assert waited < 3.0  # the stall itself: without the idle deadline it would be waited out


async def test_silent_server_trips_first_token_timeout(silent_server: SilentServer) -> None:
    """No response headers at all: first_token_timeout, naming its value."""
    async with make_client(silent_server.url, first_token_timeout=0.3) as client:
        with pytest.raises(LLMTimeoutError) as info:
            await _collect(client)
    assert info.value.deadline == "first_token"
    assert "0.3 s" in info.value.message


async def test_slow_caller_does_not_trip_idle_timeout() -> None:
    """Time the caller spends between chunks is not server silence."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c"]))
        async with make_client(server.url, idle_timeout=0.2) as client:
            chunks = []
            async for chunk in client.stream_chat(HELLO):
                chunks.append(chunk)
                await asyncio.sleep(0.3)
    assert _text(chunks) == "abc"


async def test_connect_timeout_is_its_own_deadline(full_backlog_url: str) -> None:
    """A connection that cannot be set up trips connect_timeout, named as such."""
    async with make_client(full_backlog_url, connect_timeout=0.3, max_retries=0) as client:
        with pytest.raises(LLMTimeoutError) as info:
            await _collect_retry(client)
    assert (info.value.deadline, info.value.timeout) == ("connect", 0.3)
    assert "connect_timeout" in info.value.message


async def test_non_streaming_answer_must_arrive_within_first_token_timeout() -> None:
    """chat(stream=False) waits for the whole body under first_token_timeout."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="slow", delay_before_headers=1.0))
        async with make_client(server.url, first_token_timeout=0.3, max_retries=0) as client:
            with pytest.raises(LLMTimeoutError) as info:
                await client.chat(HELLO, stream=False)
    assert info.value.deadline == "first_token"


async def test_status_error_carries_request_id_and_message() -> None:
    """A status error has the server's parsed message and its x-request-id."""
    async with TestServer(dialect="openai") as server:
        server.script(
            Reply(status=400, error_message="bad field", headers={"x-request-id": "req-42"})
        )
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError) as info:
                await _collect(client)
    assert info.value.request_id == "req-42"
    assert info.value.server_message == "bad field"
    assert info.value.error_type == "invalid_request_error"
    assert (info.value.method, info.value.url) == ("POST", server.url + "/v1/chat/completions")


async def test_kept_alive_connection_the_server_closed_is_not_an_error() -> None:
    """A kept-alive connection that the server closes as the next request arrives (the race
    llama-cpp-python runs after an empty 200) does not fail that request, even without
    retries: it goes out again on a fresh connection."""
    body = (
        b'data: {"choices":[{"index":0,"delta":{"content":"hi"},"finish_reason":"stop"}]}\n\n'
        b"data: [DONE]\n\n"
    )
    answer = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )
    connections = 0
    handlers: list[asyncio.Task[Any]] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal connections
        connections += 1
        task = asyncio.current_task()
        assert task is not None
        handlers.append(task)
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(answer)
            await writer.drain()
            with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
                await reader.readuntil(b"\r\n\r\n")  # a second request on this connection:
        finally:
            writer.close()  # hang up without answering it

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    try:
        async with make_client(url, max_retries=0) as client:
            first = await _collect(client)
            second = await _collect(client)
    finally:
        server.close()
        await server.wait_closed()
        await asyncio.gather(*handlers, return_exceptions=True)  # each has closed its writer
    assert _text(first) == _text(second) == "hi"
    assert connections == 2


#: One keep-alive time per burst, from closing a connection right after its answer to closing
#: it after a few milliseconds idle: at some of them the server's close meets the client's next
#: request on that connection (the gap between an answer and the connection's next use is
#: about a millisecond here), whatever the machine's speed.
IDLE_CLOSES = (0.0, 0.001, 0.002, 0.003, 0.004, 0.005, 0.006, 0.008)
#: Between two bursts: longer than every keep-alive time, so every idle connection is closed.
BURST_PAUSE = 0.05


async def _burst(client: LLMClient, burst: int) -> list[str]:
    """16 chat() calls, at most 8 at a time; their texts in call order."""
    gate = asyncio.Semaphore(8)

    async def call(index: int) -> str:
        async with gate:
            result = await client.chat([Message.user(f"burst {burst} call {index}")])
            return result.text

    return await asyncio.gather(*(call(index) for index in range(16)))


async def test_bursts_lose_no_request_to_connections_the_server_closed_while_idle(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Issue 21 item 3. With max_retries=0, bursts of 16 chat() calls (8 at a time), against a
    server that closes kept-alive connections once idle: every call is answered, the server
    answered each request exactly once (a request that met a closed connection never reached
    it, and was sent again on another connection), and no connection is left in use."""
    caplog.set_level(logging.DEBUG, logger="llmtap")
    async with TestServer(dialect="llamacpp") as server:
        async with make_client(server.url, max_retries=0) as client:
            texts = []
            for burst, keep_alive in enumerate(IDLE_CLOSES):
                server.keep_alive = keep_alive
                texts.append(await _burst(client, burst))
                await asyncio.sleep(BURST_PAUSE)
            in_use = client.connections_in_use
    prompts = [[f"burst {b} call {i}" for i in range(16)] for b in range(len(IDLE_CLOSES))]
    answered = [request.json["messages"][-1]["content"] for request in server.chat_requests]
    dropped = [request.json["messages"][-1]["content"] for request in server.dropped_requests]
    resent = [r for r in caplog.records if r.getMessage().startswith("llm_stale_connection")]
    assert texts == [[f"echo: {prompt}" for prompt in burst] for burst in prompts]
    assert sorted(answered) == sorted(prompt for burst in prompts for prompt in burst)
    # Some requests reached the server just as it closed their connection: each of those was
    # resent, and answered once.
    assert set(dropped) <= set(answered)
    assert len(dropped) <= len(resent)
    assert in_use == 0
    assert server.idle_closes == server.connections  # every connection was closed once idle
    assert resent != [], "no request met a closed connection: the race was not run"


# --- the pool ------------------------------------------------------------------------------


async def test_completed_streams_reuse_one_connection() -> None:
    """Keep-alive: sequential streams do not each open a new connection."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            for _ in range(3):
                await _collect(client)
            assert client.connections_in_use == 0
        assert [r.connection for r in server.chat_requests] == [1, 1, 1]
        assert server.connections == 1


async def test_exception_in_callers_loop_releases_connection() -> None:
    """An exception raised by the caller mid-iteration gives the connection back."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=[f"w{i}" for i in range(50)], delay_between=0.05))
        async with make_client(server.url) as client:
            with pytest.raises(ZeroDivisionError):
                async for _chunk in client.stream_chat(HELLO):
                    _ = 1 / 0
            await asyncio.sleep(0.05)
            assert client.connections_in_use == 0


async def test_cancelled_task_releases_connection() -> None:
    """Cancelling the task that iterates closes the stream promptly."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=[f"w{i}" for i in range(50)], delay_between=0.05))
        async with make_client(server.url) as client:

            async def consume() -> None:
                async for _chunk in client.stream_chat(HELLO):
                    pass

            task = asyncio.create_task(consume())
            await asyncio.sleep(0.15)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.05)
            assert client.connections_in_use == 0


async def test_closed_client_is_a_usage_error() -> None:
    """Using a closed client is a programming error, not server trouble."""
    client = LLMClient(LLMConfig(model="m"))
    await client.close()
    with pytest.raises(LLMUsageError):
        await _collect(client)


def test_missing_model_is_a_usage_error() -> None:
    """No model and no preflight: the call says what to set."""
    client = LLMClient(LLMConfig(model=""))
    with pytest.raises(LLMUsageError) as info:
        client.stream_chat(HELLO)
    assert "LLMTAP_MODEL" in str(info.value)


# --- preflight -----------------------------------------------------------------------------


async def test_preflight_ollama_reports_version_and_resolves_latest() -> None:
    """Ollama: version from /api/version, 'llama3.2' resolves to 'llama3.2:latest'."""
    async with TestServer(dialect="ollama", version="0.33.0") as server:
        async with make_client(server.url, model="llama3.2") as client:
            report = await client.preflight_check()
            assert client.model == "llama3.2:latest"
    assert report.server == "ollama"
    assert report.version == "0.33.0"
    assert report.models == ("llama3.2:latest",)
    assert report.model == "llama3.2:latest"
    assert report.latency > 0


async def test_preflight_picks_the_only_model_when_none_is_set() -> None:
    """An empty model name takes the server's only model."""
    async with TestServer(dialect="vllm", models=["Qwen/Qwen3-8B"]) as server:
        async with make_client(server.url, model="") as client:
            report = await client.preflight_check()
            chunks = await _collect(client)
        assert server.chat_requests[0].json["model"] == "Qwen/Qwen3-8B"
    assert report.model == "Qwen/Qwen3-8B"
    assert _text(chunks) == "echo: hello"


async def test_preflight_asks_to_choose_among_several_models() -> None:
    """An empty model name with several models lists them. The server's state caused it,
    not a misuse of the library: it is an LLMError (LLMModelError), which `except LLMError`
    catches."""
    async with TestServer(dialect="ollama", models=["a:latest", "b:latest"]) as server:
        async with make_client(server.url, model="") as client:
            with pytest.raises(LLMError) as info:
                await client.preflight_check()
    assert type(info.value) is LLMModelError
    assert info.value.available == ("a:latest", "b:latest")
    assert info.value.model == ""
    assert "a:latest, b:latest" in str(info.value)


async def test_preflight_missing_model_on_vllm_lists_available() -> None:
    """A model the server does not have: the message lists what it has."""
    async with TestServer(dialect="vllm", models=["m1", "m2"]) as server:
        async with make_client(server.url, model="m3") as client:
            with pytest.raises(LLMResponseError) as info:
                await client.preflight_check()
    assert "'m3' is not on the server" in info.value.message
    assert "m1, m2" in info.value.message


async def test_preflight_llamacpp_loading_is_not_down() -> None:
    """llama.cpp answering 503 Loading model is reported as loading."""
    async with TestServer(dialect="llamacpp", loading=True) as server:
        async with make_client(server.url) as client:
            with pytest.raises(LLMResponseError) as info:
                await client.preflight_check()
    assert info.value.status_code == 503
    assert "loading" in info.value.message
    assert "not down" in info.value.message


async def test_preflight_llamacpp_single_model_name_mismatch_is_a_warning() -> None:
    """llama.cpp serves its one model whatever name is asked: a warning, not an error."""
    async with TestServer(dialect="llamacpp", models=["tiny"]) as server:
        async with make_client(server.url, model="gpt-4") as client:
            report = await client.preflight_check()
    assert report.server == "llama.cpp"
    assert len(report.warnings) == 1
    assert "'tiny'" in report.warnings[0]


@pytest.mark.parametrize("build", [None, "b0-unknown"])
async def test_preflight_llamacpp_reports_its_build_from_props(build: str | None) -> None:
    """llama.cpp's version is its build, the ``build_info`` of ``GET /props``."""
    async with TestServer(dialect="llamacpp", version=build) as server:
        async with make_client(server.url) as client:
            report = await client.preflight_check()
    paths = [request.path for request in server.requests]
    assert (report.server, report.version) == ("llama.cpp", build or "b6500-1a2b3c4d")
    assert paths == ["/api/version", "/v1/models", "/props"]


async def test_preflight_of_other_servers_asks_no_props() -> None:
    """An OpenAI-compatible server is not asked for llama.cpp's ``/props``: no version."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url, model="gpt-4o-mini") as client:
            report = await client.preflight_check()
    paths = [request.path for request in server.requests]
    assert (report.server, report.version, paths) == (
        "openai-compatible",
        None,
        ["/api/version", "/v1/models"],
    )


async def test_preflight_auth_refused_says_to_set_the_key() -> None:
    """A 401 on the listing says to set LLMTAP_API_KEY."""
    async with TestServer(dialect="openai", api_key="sk-right") as server:
        async with make_client(server.url, api_key="sk-wrong") as client:
            with pytest.raises(LLMResponseError) as info:
                await client.preflight_check()
    assert info.value.status_code == 401
    assert "LLMTAP_API_KEY" in info.value.message


async def test_preflight_wrong_path_says_check_port_and_path() -> None:
    """An endpoint where /v1/models is 404 is reported as no LLM API there."""
    async with TestServer(dialect="llamacpp") as server:
        async with make_client(server.url + "/wrong") as client:
            with pytest.raises(LLMResponseError) as info:
                await client.preflight_check()
    assert info.value.status_code == 404
    assert "port" in info.value.message


async def test_preflight_not_running_says_how_to_start(closed_port_url: str) -> None:
    """Nothing listening: which URL, and how to start Ollama."""
    async with make_client(closed_port_url) as client:
        with pytest.raises(LLMConnectionError) as info:
            await client.preflight_check()
    assert closed_port_url in info.value.message
    assert "ollama serve" in info.value.message


# --- secrets -------------------------------------------------------------------------------


async def test_api_key_never_reaches_any_log(
    no_waits: None, caplog: pytest.LogCaptureFixture
) -> None:
    """With every logger at DEBUG, a run with retries and errors never logs the key."""
    key = "sk-never-log-me-42"
    caplog.set_level(logging.DEBUG)
    async with TestServer(dialect="openai", api_key=key, models=["llama3.2"]) as server:
        server.script(Reply(status=503), Reply(text="ok"))
        async with make_client(server.url, api_key=key) as client:
            await _collect_retry(client)
            await client.preflight_check()
    assert caplog.records
    assert all(key not in record.getMessage() for record in caplog.records)
    assert key not in caplog.text


# --- the chunk stream object ---------------------------------------------------------------


async def test_stream_chat_sends_nothing_until_iterated_and_nothing_after_close() -> None:
    """stream_chat() is lazy: the request goes out at the first chunk asked for; a stream
    closed before that never sends it and iterates as empty."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="unused"))
        async with make_client(server.url) as client:
            chunks = client.stream_chat(HELLO)
            await asyncio.sleep(0.01)
            assert server.chat_requests == []
            await chunks.aclose()
            assert [chunk async for chunk in chunks] == []
            assert server.chat_requests == []


async def test_stream_chat_as_a_context_manager_gives_the_connection_back() -> None:
    """Leaving ``async with client.stream_chat(...)`` part-way closes the answer's
    connection at once, and the stream then ends."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=[f"w{i} " for i in range(50)], delay_between=0.05))
        async with make_client(server.url) as client:
            async with client.stream_chat(HELLO) as chunks:
                first = await anext(chunks)
                assert client.connections_in_use == 1
            assert client.connections_in_use == 0
            assert [chunk async for chunk in chunks] == []
    assert first["object"] == "chat.completion.chunk"


async def test_stream_chat_closed_after_its_end_is_a_no_op() -> None:
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="The sky is blue."))
        async with make_client(server.url) as client:
            chunks = client.stream_chat(HELLO)
            received = [chunk async for chunk in chunks]
            await chunks.aclose()
            await chunks.aclose()
            assert client.connections_in_use == 0
    assert _text(received) == "The sky is blue."
