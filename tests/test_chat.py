"""One ChatResult over every dialect: stream(), chat(), resume, native Ollama, embeddings."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from llmtap import (
    ChatResult,
    FinishEvent,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMUsageError,
    Message,
    ReasoningDelta,
    SyncClient,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    UsageEvent,
)
from llmtap.testing import Reply, TestServer, ToolCallSpec
from tests.conftest import make_client

HELLO = [Message.user("hello")]

WEATHER = ToolCallSpec("get_weather", {"city": "Paris"}, id="call_w")
TIME = ToolCallSpec("get_time", {"tz": "CET"}, id="call_t")


def conversation(*, reasoning: bool = True) -> Reply:
    """The scripted conversation every dialect must turn into the same ChatResult."""
    return Reply(
        reasoning="Let me think." if reasoning else "",
        text="The weather is sunny.",
        tool_calls=[WEATHER, TIME],
        usage=(12, 34),
    )


EXPECTED_CALLS = (
    ToolCall(id="call_w", name="get_weather", arguments={"city": "Paris"}),
    ToolCall(id="call_t", name="get_time", arguments={"tz": "CET"}),
)


async def _chat_result(dialect: str, api: str, *, stream: bool, reply: Reply) -> ChatResult:
    async with TestServer(dialect=dialect) as server:
        server.script(reply)
        async with make_client(server.url, api=api) as client:
            return await client.chat(HELLO, stream=stream)


CASES = [
    ("ollama", "openai"),
    ("ollama", "ollama"),
    ("llamacpp", "openai"),
    ("vllm", "openai"),
]


async def test_conformance_one_result_from_every_dialect() -> None:
    """Text, reasoning, two parallel tool calls and usage come out equal from every server."""
    results = [
        await _chat_result(dialect, api, stream=True, reply=conversation())
        for dialect, api in CASES
    ]
    for result in results:
        assert result.text == "The weather is sunny."
        assert result.reasoning == "Let me think."
        assert result.tool_calls == EXPECTED_CALLS
        assert result.finish_reason == "tool_calls"
        assert result.usage == Usage(prompt_tokens=12, completion_tokens=34, total_tokens=46)
        assert result.message == Message.assistant(
            "The weather is sunny.", tool_calls=list(EXPECTED_CALLS)
        )
    openai = await _chat_result(
        "openai", "openai", stream=True, reply=conversation(reasoning=False)
    )
    assert openai.model_dump(include={"text", "tool_calls", "finish_reason", "usage"}) == (
        results[0].model_dump(include={"text", "tool_calls", "finish_reason", "usage"})
    )


@pytest.mark.parametrize(("dialect", "api"), [*CASES, ("openai", "openai")])
async def test_streaming_and_non_streaming_chat_are_equal(dialect: str, api: str) -> None:
    """chat(stream=True) and chat(stream=False) give the same result (timings aside)."""
    reasoning = dialect != "openai"
    streamed = await _chat_result(
        dialect, api, stream=True, reply=conversation(reasoning=reasoning)
    )
    whole = await _chat_result(dialect, api, stream=False, reply=conversation(reasoning=reasoning))
    fields = {"message", "text", "reasoning", "tool_calls", "finish_reason", "usage", "server"}
    assert streamed.model_dump(include=fields) == whole.model_dump(include=fields)
    assert whole.timings is not None
    assert whole.timings.time_to_first_token is None


@pytest.mark.parametrize(
    ("dialect", "api", "server"),
    [
        ("ollama", "openai", "ollama"),
        ("ollama", "ollama", "ollama"),
        ("llamacpp", "openai", "llama.cpp"),
        ("vllm", "openai", "vllm"),
        ("openai", "openai", "openai-compatible"),
    ],
)
async def test_server_kind_is_told_without_preflight(dialect: str, api: str, server: str) -> None:
    """The result names the server from the marks its chunks carry."""
    result = await _chat_result(dialect, api, stream=True, reply=Reply(text="hi there"))
    assert result.server == server


async def test_stream_yields_typed_events_in_order() -> None:
    """Reasoning, text, tool-call, finish and usage events arrive as the server sent them."""
    async with TestServer(dialect="vllm") as server:
        server.script(
            Reply(reasoning="Hmm.", chunks=["A", "B"], tool_calls=[WEATHER], usage=(3, 4))
        )
        async with make_client(server.url) as client, client.stream(HELLO) as stream:
            events = [event async for event in stream]
            result = await stream.result()
    kinds = [event.type for event in events]
    assert kinds[:3] == ["reasoning", "text", "text"]
    assert kinds[-2:] == ["finish", "usage"]
    assert events[0] == ReasoningDelta("Hmm.")
    assert [e for e in events if isinstance(e, TextDelta)] == [TextDelta("A"), TextDelta("B")]
    calls = [e for e in events if isinstance(e, ToolCallDelta)]
    assert calls[0].name == "get_weather"
    assert "".join(call.arguments for call in calls) == '{"city":"Paris"}'
    assert events[-2] == FinishEvent("tool_calls")
    assert events[-1] == UsageEvent(Usage(prompt_tokens=3, completion_tokens=4, total_tokens=7))
    assert result.text == "AB"
    assert result.tool_calls == (EXPECTED_CALLS[0],)


async def test_result_after_partial_iteration_reads_the_rest() -> None:
    """Breaking out early and then asking for the result gives the whole answer."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["one", " two", " three"]))
        async with make_client(server.url) as client, client.stream(HELLO) as stream:
            async for event in stream:
                assert event == TextDelta("one")
                break
            result = await stream.result()
    assert result.text == "one two three"
    assert result.finish_reason == "stop"


async def test_text_gives_only_text() -> None:
    """stream.text() yields the text pieces and still accumulates the rest."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(reasoning="think", chunks=["x", "y"]))
        async with make_client(server.url) as client, client.stream(HELLO) as stream:
            pieces = [piece async for piece in stream.text()]
            result = await stream.result()
    assert pieces == ["x", "y"]
    assert result.reasoning == "think"


async def test_stream_iterated_twice_is_a_usage_error() -> None:
    """A ChatStream is a one-shot iterator; a second loop is a programming error."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client, client.stream(HELLO) as stream:
            _ = [event async for event in stream]
            with pytest.raises(LLMUsageError):
                _ = [event async for event in stream]


async def test_timings_are_measured() -> None:
    """Time to first token, total and tokens per second are filled in."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c"], usage=(5, 3), delay_between=0.02))
        async with make_client(server.url) as client:
            result = await client.chat(HELLO)
    timings = result.timings
    assert timings is not None
    assert timings.time_to_first_token is not None
    assert timings.total is not None
    assert 0 < timings.time_to_first_token < timings.total
    assert timings.tokens_per_second is not None
    assert timings.tokens_per_second > 0


async def test_native_ollama_metrics_become_usage_and_timings() -> None:
    """eval_count, eval_duration and load_duration map to usage and timings."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="a b c", usage=(7, 3)))
        async with make_client(server.url, api="ollama") as client:
            result = await client.chat(HELLO)
    assert result.usage == Usage(prompt_tokens=7, completion_tokens=3, total_tokens=10)
    assert result.timings is not None
    assert result.timings.load_duration == 0.002
    assert result.timings.tokens_per_second == pytest.approx(1000.0)  # 3 tokens in 3 ms
    # prompt_eval_duration 0.7 ms (7 tokens), eval_duration 3 ms
    durations = (result.timings.prompt_duration, result.timings.generation_duration)
    assert durations == (pytest.approx(0.0007), pytest.approx(0.003))


@pytest.mark.parametrize("stream", [True, False])
async def test_llama_cpp_timings_give_its_own_speed_and_durations(stream: bool) -> None:
    """llama.cpp's own ``timings`` (on the last chunk, or the whole answer) give the speed
    (its ``predicted_per_second``) and the server's prompt and generation times (its
    ``prompt_ms`` and ``predicted_ms``), streamed or not; the client still measures the total
    and, when streaming, the first token."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(chunks=["a", "b", "c"], usage=(8, 3)))
        async with make_client(server.url) as client:
            result = await client.chat(HELLO, stream=stream)
    timings = result.timings
    # the imitation's timings: 0.5 ms a prompt token, 1 ms a generated one, 1000 tokens/s
    server_figures = (
        timings.tokens_per_second,
        timings.prompt_duration,
        timings.generation_duration,
    )
    assert server_figures == (1000.0, pytest.approx(0.004), pytest.approx(0.003))
    assert timings.total is not None
    assert (timings.time_to_first_token is not None) == stream


async def test_server_without_timings_leaves_the_server_durations_unknown() -> None:
    """An OpenAI-style server that sends no timings: speed from the client's clock, and no
    server durations."""
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(chunks=["a", "b", "c"], usage=(8, 3), delay_between=0.01))
        async with make_client(server.url) as client:
            result = await client.chat(HELLO)
    timings = result.timings
    assert (timings.prompt_duration, timings.generation_duration) == (None, None)
    assert timings.tokens_per_second is not None
    assert timings.tokens_per_second < 1000.0  # three tokens over at least 20 ms


async def test_api_auto_picks_native_ollama_after_preflight() -> None:
    """With api='auto', a preflight that finds Ollama switches chat to /api/chat."""
    async with TestServer(dialect="ollama") as server:
        async with make_client(server.url, api="auto") as client:
            await client.preflight_check()
            result = await client.chat(HELLO, num_ctx=2048, keep_alive="10m", think=False)
        request = server.chat_requests[0]
    assert request.path == "/api/chat"
    assert request.json["options"] == {"num_ctx": 2048}
    assert request.json["keep_alive"] == "10m"
    assert request.json["think"] is False
    assert result.text == "echo: hello"
    assert result.server == "ollama"


async def test_native_message_conversion() -> None:
    """Images become bare base64 and tool-call arguments stay objects on /api/chat."""
    history = [
        Message.user("what is this?", images=[b"\x89PNG"]),
        Message.assistant(None, tool_calls=[EXPECTED_CALLS[0]]),
        Message.tool("sunny", tool_call_id="call_w", name="get_weather"),
    ]
    async with TestServer(dialect="ollama") as server:
        async with make_client(server.url, api="ollama") as client:
            await client.chat(history)
        sent = server.chat_requests[0].json["messages"]
    assert sent[0] == {"role": "user", "content": "what is this?", "images": ["iVBORw=="]}
    assert sent[1]["tool_calls"] == [
        {"id": "call_w", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}
    ]
    assert sent[2] == {
        "role": "tool",
        "content": "sunny",
        "tool_call_id": "call_w",
        "tool_name": "get_weather",
    }


async def test_native_truncation_is_a_warning_not_silence() -> None:
    """A prompt that filled Ollama's running context (from /api/ps) gives a warning."""
    async with TestServer(
        dialect="ollama", loaded_models=["llama3.2:latest"], context_length=512
    ) as server:
        server.script(Reply(text="short", usage=(512, 2)), Reply(text="fine", usage=(100, 2)))
        async with make_client(server.url, api="ollama") as client:
            cut = await client.chat(HELLO)
            whole = await client.chat(HELLO)
    assert len(cut.warnings) == 1
    assert "512 of 512" in cut.warnings[0]
    assert "num_ctx" in cut.warnings[0]
    assert whole.warnings == ()


async def test_native_truncation_uses_the_num_ctx_sent() -> None:
    """When num_ctx was sent, it is the context size compared against."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="short", usage=(2048, 2)))
        async with make_client(server.url, api="ollama") as client:
            result = await client.chat(HELLO, num_ctx=2048)
        assert [r.path for r in server.requests] == ["/api/chat"]
    assert "2048 of 2048" in result.warnings[0]


# --- failures ------------------------------------------------------------------------------


async def test_chat_retries_a_stream_that_broke_midway(no_waits: None) -> None:
    """chat() delivers nothing early, so a mid-stream failure is retried from scratch."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c"], reset_after=3), Reply(chunks=["x", "y"]))
        async with make_client(server.url) as client:
            result = await client.chat(HELLO)
        assert len(server.chat_requests) == 2
    assert result.text == "xy"


async def test_stream_interrupted_after_events_carries_partial_text(no_waits: None) -> None:
    """Iterating caller: a failure after events raises LLMStreamInterrupted, not a retry."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c"], reset_after=3), Reply(text="never"))
        seen: list[str] = []
        async with make_client(server.url) as client, client.stream(HELLO) as stream:
            with pytest.raises(LLMStreamInterrupted) as info:
                async for piece in stream.text():
                    seen.append(piece)
        assert len(server.chat_requests) == 1
    assert seen == ["a", "b"]
    assert info.value.partial_text == "ab"


async def test_result_after_an_interrupted_stream_is_a_usage_error(no_waits: None) -> None:
    """Once iteration raised LLMStreamInterrupted, result() does not pretend the partial
    answer was whole."""
    async with TestServer(dialect="vllm") as server:
        server.script(Reply(chunks=["a", "b", "c"], reset_after=3))
        async with make_client(server.url) as client, client.stream(HELLO) as stream:
            with pytest.raises(LLMStreamInterrupted) as info:
                _ = [event async for event in stream]
            with pytest.raises(LLMUsageError):
                await stream.result()
            assert client.connections_in_use == 0
    assert info.value.partial_text == "ab"
    assert info.value.chunks_received == 2


async def test_timings_end_with_the_answer_not_with_the_call_to_result() -> None:
    """The answer's total time is taken when its last chunk arrived, however long the caller
    waits before asking for the result."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b"], usage=(1, 2)))
        async with make_client(server.url) as client, client.stream(HELLO) as stream:
            pieces = [piece async for piece in stream.text()]
            await asyncio.sleep(0.5)
            result = await stream.result()
    assert pieces == ["a", "b"]
    assert result.timings is not None
    assert result.timings.total is not None
    assert result.timings.total < 0.5


async def test_stream_closed_part_way_gives_the_connection_back_and_ends() -> None:
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=[f"w{i} " for i in range(40)], delay_between=0.02))
        async with make_client(server.url) as client:
            stream = client.stream(HELLO)
            first = [await anext(aiter(stream)), await anext(stream)]
            await stream.aclose()
            assert client.connections_in_use == 0
            with pytest.raises(StopAsyncIteration):
                await anext(stream)
    assert first == [TextDelta("w0 "), TextDelta("w1 ")]


async def test_retry_before_first_event_is_invisible(no_waits: None) -> None:
    """A 503 before anything was delivered is retried inside stream()."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(status=503, error_message="busy"), Reply(text="ok then"))
        async with make_client(server.url) as client, client.stream(HELLO) as stream:
            pieces = [piece async for piece in stream.text()]
    assert pieces == ["ok", " then"]


async def test_broken_tool_arguments_name_the_tool() -> None:
    """Arguments that are not JSON at the end raise LLMStreamError naming the tool."""
    async with TestServer(dialect="vllm") as server:
        cut = ToolCallSpec("get_weather", '{"city": "Par', id="c1")
        server.script(Reply(tool_calls=[cut], finish_reason="length"))
        async with make_client(server.url) as client:
            with pytest.raises(LLMStreamError) as info:
                await client.chat(HELLO)
    assert "get_weather" in info.value.message
    assert '{"city": "Par' in info.value.message


# --- resume --------------------------------------------------------------------------------


async def test_resume_continues_the_partial_answer_on_vllm(no_waits: None) -> None:
    """resume=True re-asks with the partial text as a final assistant message (vLLM's
    continue_final_message); the caller sees one seamless answer, no token twice."""
    async with TestServer(dialect="vllm", models=["m"]) as server:
        server.script(Reply(chunks=["Hello", " wor"], reset_after=3), Reply(chunks=["ld", "!"]))
        async with make_client(server.url, model="m") as client:
            await client.preflight_check()
            async with client.stream(HELLO, resume=True) as stream:
                pieces = [piece async for piece in stream.text()]
                result = await stream.result()
        second = server.chat_requests[1].json
    assert pieces == ["Hello", " wor", "ld", "!"]
    assert result.text == "Hello world!"
    assert second["messages"][-1] == {"role": "assistant", "content": "Hello wor"}
    assert second["continue_final_message"] is True
    assert second["add_generation_prompt"] is False


async def test_resume_on_native_ollama_uses_a_prefill(no_waits: None) -> None:
    """Ollama continues a trailing assistant message; no vLLM-only fields are sent."""
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(chunks=["Hi", " th"], reset_after=2), Reply(chunks=["ere"]))
        async with make_client(server.url, api="ollama") as client:
            result = await client.chat(HELLO, resume=True)
        second = server.chat_requests[1].json
    assert result.text == "Hi there"
    assert second["messages"][-1] == {"role": "assistant", "content": "Hi th"}
    assert "continue_final_message" not in second


async def test_no_resume_on_a_server_that_cannot_continue(no_waits: None) -> None:
    """An unknown OpenAI-compatible server gets no prefill: the interruption is raised."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b"], reset_after=2), Reply(text="never"))
        async with make_client(server.url) as client, client.stream(HELLO, resume=True) as s:
            with pytest.raises(LLMStreamInterrupted):
                _ = [event async for event in s]
        assert len(server.chat_requests) == 1


async def test_no_resume_once_tool_calls_began(no_waits: None) -> None:
    """A stream that broke inside a tool call is never continued."""
    async with TestServer(dialect="vllm", models=["m"]) as server:
        server.script(
            Reply(
                text="Let me check",
                tool_calls=[WEATHER],
                reset_after=6,  # after the first two argument fragments
                delay_between=0.01,
            ),
            Reply(text="no"),
        )
        async with make_client(server.url, model="m") as client:
            await client.preflight_check()
            async with client.stream(HELLO, resume=True) as stream:
                with pytest.raises(LLMStreamInterrupted):
                    _ = [event async for event in stream]
        assert len(server.chat_requests) == 1


async def test_resumes_are_bounded_by_max_retries(no_waits: None) -> None:
    """At most max_retries resumes, then the interruption is raised."""
    async with TestServer(dialect="llamacpp") as server:
        server.script(*[Reply(chunks=[f"p{n}", "x"], reset_after=2) for n in range(4)])
        async with make_client(server.url, max_retries=2) as client:
            await client.preflight_check()  # llama.cpp marks only its last chunk
            async with client.stream(HELLO, resume=True) as stream:
                with pytest.raises(LLMStreamInterrupted) as info:
                    _ = [event async for event in stream]
        assert len(server.chat_requests) == 3
    assert info.value.partial_text == "p0p1p2"


# --- embeddings ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dialect", "api", "path"),
    [
        ("ollama", "ollama", "/api/embed"),
        ("vllm", "openai", "/v1/embeddings"),
    ],
)
async def test_embed_batches_and_keeps_order(dialect: str, api: str, path: str) -> None:
    """Five texts with batch size 2 take three requests and come back in order."""
    texts = [f"text {n}" for n in range(5)]
    async with TestServer(dialect=dialect) as server:
        async with make_client(server.url, api=api, embed_batch_size=2) as client:
            vectors = await client.embed(texts, model="embedder")
            singles = [(await client.embed(text, model="embedder"))[0] for text in texts]
        batches = [r.json["input"] for r in server.requests if r.path == path]
    assert batches[:3] == [["text 0", "text 1"], ["text 2", "text 3"], ["text 4"]]
    assert len(vectors) == 5
    assert vectors == singles
    assert len({tuple(v) for v in vectors}) == 5


async def test_embed_base64_is_decoded() -> None:
    """encoding_format='base64' answers decode to the same floats (float32 precision)."""
    async with TestServer(dialect="openai") as server:
        async with make_client(server.url) as client:
            floats = await client.embed(["a", "b"], model="e")
            decoded = await client.embed(["a", "b"], model="e", encoding_format="base64")
    assert decoded == [pytest.approx(vector, rel=1e-6) for vector in floats]


async def test_embed_errors_and_retries(no_waits: None) -> None:
    """Embedding requests are retried like chat requests and raise the same errors."""
    async with TestServer(dialect="openai", models=["e"]) as server:
        async with make_client(server.url, model="e") as client:
            assert len(await client.embed(["x"])) == 1
            with pytest.raises(LLMResponseError) as info:
                await client.embed(["x"], model="missing")
    assert info.value.status_code == 404


# --- the synchronous facade ---------------------------------------------------------------


def _run_sync(url: str) -> tuple[ChatResult, list[str], ChatResult, list[list[float]]]:
    with SyncClient(endpoint=url, model="llama3.2", first_token_timeout=5.0) as client:
        result = client.chat(HELLO)
        with client.stream([Message.user("again")]) as stream:
            pieces = list(stream.text())
            streamed = stream.result()
        vectors = client.embed(["a"])
    return result, pieces, streamed, vectors


async def test_sync_client_works_inside_a_running_loop() -> None:
    """SyncClient runs on its own loop thread, so it works even from inside an event loop
    (as in a notebook cell), here called straight from this coroutine."""
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="sync hi"), Reply(chunks=["p", "q"]))
        result, pieces, streamed, vectors = await asyncio.to_thread(_run_sync, server.url)
    assert result.text == "sync hi"
    assert pieces == ["p", "q"]
    assert streamed.text == "pq"
    assert len(vectors) == 1


def test_sync_client_outside_any_loop() -> None:
    """SyncClient from plain synchronous code, with the test server on another thread."""
    import threading

    ready = threading.Event()
    holder: dict[str, Any] = {}

    async def serve() -> None:
        async with TestServer(dialect="llamacpp") as server:
            server.script(Reply(text="plain sync"))
            holder["url"] = server.url
            holder["stop"] = asyncio.Event()
            ready.set()
            await holder["stop"].wait()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    ready.wait(5)
    try:
        with SyncClient(endpoint=holder["url"], model="tiny") as client:
            assert client.chat(HELLO).text == "plain sync"
    finally:
        loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(5)
        loop.close()
