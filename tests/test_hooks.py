"""Lifecycle hooks: what each record carries, in which order they come, and that a hook can
never break a call. (Every cell of the fault matrix checks its exact sequence too.)"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from llmtap import (
    AttemptFailed,
    FirstChunk,
    HookRecord,
    LLMClient,
    LLMConfig,
    LLMConnectionError,
    Message,
    RequestFailed,
    RequestFinished,
    RequestStarted,
    Router,
    Usage,
)
from llmtap._hooks import timings_of, usage_in
from llmtap.testing import Reply, TestServer, no_retry_waits

HELLO = [Message.user("hello")]


class Records:
    """A hook that keeps every record."""

    def __init__(self) -> None:
        self.records: list[HookRecord] = []

    def __call__(self, record: HookRecord) -> None:
        self.records.append(record)

    def of(self, kind: type[HookRecord]) -> list[HookRecord]:
        return [record for record in self.records if isinstance(record, kind)]

    @property
    def kinds(self) -> list[str]:
        return [type(record).__name__ for record in self.records]


@pytest.fixture(autouse=True)
def _no_waits() -> Iterator[None]:
    with no_retry_waits():
        yield


def _config(url: str, records: object, **extra: object) -> LLMConfig:
    return LLMConfig(endpoint=url, model="llama3.2", hooks=[records], **extra)  # type: ignore[arg-type]


async def test_a_reset_before_the_headers_every_time_gives_the_documented_sequence() -> None:
    """Three resets before the headers with max_retries=2: RequestStarted, AttemptFailed
    (retried) twice, AttemptFailed (not retried), RequestFailed, with the attempts numbered
    and the caller's error on the last record."""
    records = Records()
    async with TestServer(dialect="openai") as server:
        server.script(*(Reply(text="x", reset_before_headers=True) for _ in range(3)))
        async with LLMClient(_config(server.url, records, max_retries=2)) as client:
            with pytest.raises(LLMConnectionError) as info:
                await client.chat(HELLO)
    assert records.kinds == [
        "RequestStarted",
        "AttemptFailed",
        "AttemptFailed",
        "AttemptFailed",
        "RequestFailed",
    ]
    failed = records.of(AttemptFailed)
    assert [(r.attempt, r.will_retry, r.action) for r in failed] == [  # type: ignore[union-attr]
        (1, True, "retry"),
        (2, True, "retry"),
        (3, False, "raise"),
    ]
    assert all(isinstance(r.error, LLMConnectionError) for r in failed)  # type: ignore[union-attr]
    assert failed[-1].reason == "retries used up"  # type: ignore[union-attr]
    end = records.records[-1]
    assert isinstance(end, RequestFailed)
    assert (end.error, end.attempts) == (info.value, 3)
    assert len({r.call_id for r in records.records}) == 1


async def test_a_successful_stream_reports_its_start_first_chunk_and_end() -> None:
    """A streamed answer: RequestStarted with what was asked, FirstChunk with the time to it,
    RequestFinished with the usage, timings, finish reason, model and answer id."""
    records = Records()
    async with TestServer(dialect="vllm", models=["llama3.2"]) as server:
        server.script(Reply(text="one two three", usage=(7, 3)))
        async with LLMClient(_config(server.url, records, max_tokens=50)) as client:
            async with client.stream(HELLO, seed=4) as stream:
                result = await stream.result()
    assert records.kinds == ["RequestStarted", "FirstChunk", "RequestFinished"]
    started, first, finished = records.records
    assert isinstance(started, RequestStarted)
    assert (started.operation, started.model, started.endpoint, started.stream) == (
        "chat",
        "llama3.2",
        server.url,
        True,
    )
    payload = started.payload
    assert payload is not None
    assert (payload["max_tokens"], payload["seed"], payload["messages"]) == (
        50,
        4,
        [{"role": "user", "content": "hello"}],
    )
    assert isinstance(first, FirstChunk)
    assert (first.attempt, first.endpoint) == (1, server.url)
    assert first.time_to_first_chunk > 0
    assert isinstance(finished, RequestFinished)
    assert (finished.endpoint, finished.attempts, finished.finish_reason) == (server.url, 1, "stop")
    assert finished.usage is not None
    assert (finished.usage.prompt_tokens, finished.usage.completion_tokens) == (7, 3)
    assert finished.model == result.model == "llama3.2"
    assert finished.response_id is not None
    assert finished.response_id.startswith("chatcmpl-")
    assert finished.timings is not None
    assert finished.timings.total is not None
    assert finished.timings.total >= first.time_to_first_chunk


async def test_raw_chunks_report_the_finish_and_usage_they_carried() -> None:
    """stream_chat hands chunks over untouched, yet its RequestFinished has the finish reason
    and usage of the last chunks."""
    records = Records()
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="a b", usage=(5, 2), finish_reason="length"))
        async with LLMClient(_config(server.url, records)) as client:
            chunks = [chunk async for chunk in client.stream_chat(HELLO)]
    assert chunks
    finished = records.records[-1]
    assert isinstance(finished, RequestFinished)
    assert finished.finish_reason == "length"
    assert finished.usage is not None
    assert (finished.usage.prompt_tokens, finished.usage.completion_tokens) == (5, 2)


async def test_raw_native_chunks_report_ollamas_own_speed() -> None:
    """From Ollama's native stream, a raw RequestFinished has the counts of the final line
    and the speed Ollama measured (``eval_count`` over ``eval_duration``: here 1 ms a token),
    as a typed stream's result does."""
    records = Records()
    async with TestServer(dialect="ollama") as server:
        server.script(Reply(text="a b c", usage=(5, 3)), Reply(text="a b c", usage=(5, 3)))
        config = LLMConfig(endpoint=server.url, api="ollama", model="m", hooks=[records])
        async with LLMClient(config) as client:
            chunks = [chunk async for chunk in client.stream_chat(HELLO)]
            result = await client.chat(HELLO)
    assert chunks
    raw, typed = records.of(RequestFinished)
    assert isinstance(raw, RequestFinished)
    assert isinstance(typed, RequestFinished)
    for finished in (raw, typed):
        assert finished.usage is not None
        assert (finished.usage.prompt_tokens, finished.usage.completion_tokens) == (5, 3)
        assert finished.timings.tokens_per_second == pytest.approx(1000.0)
    assert result.timings.tokens_per_second == pytest.approx(1000.0)


async def test_raw_llama_cpp_chunks_report_its_own_timings() -> None:
    """From llama.cpp, a raw RequestFinished reads the server's ``timings`` off the last chunk
    (the usage chunk llmtap asks for), as a typed stream's result does: its speed and its
    prompt and generation times."""
    records = Records()
    async with TestServer(dialect="llamacpp") as server:
        server.script(Reply(text="a b c", usage=(6, 3)), Reply(text="a b c", usage=(6, 3)))
        async with LLMClient(_config(server.url, records)) as client:
            chunks = [chunk async for chunk in client.stream_chat(HELLO)]
            result = await client.chat(HELLO)
    assert "timings" in chunks[-1]
    raw, typed = records.of(RequestFinished)
    expected = (1000.0, pytest.approx(0.003), pytest.approx(0.003))
    for timings in (raw.timings, typed.timings, result.timings):  # type: ignore[union-attr]
        figures = (timings.tokens_per_second, timings.prompt_duration, timings.generation_duration)
        assert figures == expected


def test_llama_cpp_timings_of_the_wrong_type_are_no_figures() -> None:
    """A llama.cpp ``timings`` whose figures are not numbers (a speed of ``null``, as the
    server writes an infinite one) gives no server durations, and the speed is counted."""
    metrics = {"timings": {"predicted_per_second": None, "prompt_ms": "1", "predicted_ms": True}}
    timings = timings_of(metrics, Usage(completion_tokens=4), 0, 1, 3)
    figures = (timings.tokens_per_second, timings.prompt_duration, timings.generation_duration)
    assert figures == (2.0, None, None)


def test_timings_ignore_metrics_of_the_wrong_type() -> None:
    """Counters a server sent as strings are no figures: the speed is counted instead."""
    metrics = {"eval_count": "3", "eval_duration": 5, "load_duration": "x"}
    timings = timings_of(metrics, Usage(completion_tokens=4), 0, 1, 3)
    assert (timings.time_to_first_token, timings.total) == (1, 3)
    assert timings.tokens_per_second == 2.0
    assert timings.load_duration is None
    assert usage_in({"eval_count": 2.5, "prompt_eval_count": 7}) == Usage(
        prompt_tokens=7, completion_tokens=None, total_tokens=7
    )


async def test_a_retry_is_reported_with_its_wait_and_the_next_attempt_number() -> None:
    """A 503 then an answer: AttemptFailed names the error and that a retry follows; the
    answer's first chunk is the second attempt's."""
    records = Records()
    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=503), Reply(text="ok"))
        async with LLMClient(_config(server.url, records)) as client:
            await client.chat(HELLO)
    assert records.kinds == ["RequestStarted", "AttemptFailed", "FirstChunk", "RequestFinished"]
    failed, first, finished = records.records[1:]
    assert isinstance(failed, AttemptFailed)
    assert (failed.attempt, failed.will_retry, failed.wait) == (1, True, 0.0)
    assert getattr(failed.error, "status_code", None) == 503
    assert isinstance(first, FirstChunk)
    assert first.attempt == 2
    assert isinstance(finished, RequestFinished)
    assert finished.attempts == 2


async def test_a_hook_that_raises_breaks_nothing_and_is_logged_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A broken hook does not stop the call nor the hooks after it; it is logged once, not
    on every record."""
    records = Records()

    def broken(record: HookRecord) -> None:
        raise ValueError("bug in the hook")

    async with TestServer(dialect="openai") as server:
        config = LLMConfig(endpoint=server.url, model="m", hooks=[broken, records])
        async with LLMClient(config) as client:
            with caplog.at_level(logging.ERROR, logger="llmtap"):
                first = await client.chat(HELLO)
                second = await client.chat(HELLO)
    assert (first.text, second.text) == ("echo: hello", "echo: hello")
    assert records.kinds.count("RequestFinished") == 2
    logged = [r.getMessage() for r in caplog.records if "llm_hook_failed" in r.getMessage()]
    assert len(logged) == 1
    assert "ValueError: bug in the hook" in logged[0]


async def test_async_hooks_are_awaited_in_order() -> None:
    """A coroutine function as a hook is awaited before the call goes on."""
    seen: list[str] = []

    async def slow(record: HookRecord) -> None:
        await asyncio.sleep(0.01)
        seen.append(type(record).__name__)

    async with TestServer(dialect="openai") as server:
        async with LLMClient(LLMConfig(endpoint=server.url, model="m", hooks=[slow])) as client:
            await client.chat(HELLO)
            assert seen == ["RequestStarted", "FirstChunk", "RequestFinished"]


async def test_a_router_names_the_endpoint_that_answered() -> None:
    """Through a Router: the failed attempt names the endpoint that failed, the end names the
    one that answered (by its name)."""
    records = Records()
    async with TestServer(dialect="openai") as bad, TestServer(dialect="openai") as good:
        bad.script(Reply(status=500))
        endpoints = [
            {"endpoint": bad.url, "model": "gpt-4o-mini", "name": "bad"},
            {"endpoint": good.url, "model": "gpt-4o-mini", "name": "good"},
        ]
        async with Router(endpoints, strategy="failover", hooks=[records]) as router:
            await router.chat(HELLO)
    assert records.kinds == ["RequestStarted", "AttemptFailed", "FirstChunk", "RequestFinished"]
    started, failed, first, finished = records.records
    assert isinstance(started, RequestStarted)
    assert started.endpoint is None  # a router picks one per attempt
    assert isinstance(failed, AttemptFailed)
    assert failed.endpoint == "bad"
    assert isinstance(first, FirstChunk)
    assert first.endpoint == "good"
    assert isinstance(finished, RequestFinished)
    assert finished.endpoint == "good"


async def test_embeddings_are_reported_as_such() -> None:
    """embed() goes through the same loop: an "embeddings" call per batch."""
    records = Records()
    async with TestServer(dialect="openai") as server:
        async with LLMClient(_config(server.url, records)) as client:
            vectors = await client.embed(["a", "b"], model="embedder")
    assert len(vectors) == 2
    started = records.records[0]
    assert isinstance(started, RequestStarted)
    assert (started.operation, started.stream) == ("embeddings", False)
    assert records.kinds[-1] == "RequestFinished"


async def test_debug_logging_tells_each_call_by_its_id(caplog: pytest.LogCaptureFixture) -> None:
    """With llmtap's logger at DEBUG, every call logs its start, first chunk and end, each
    line carrying the call's id; nothing of it at INFO."""
    async with TestServer(dialect="openai") as server:
        async with LLMClient(LLMConfig(endpoint=server.url, model="m")) as client:
            with caplog.at_level(logging.INFO, logger="llmtap"):
                await client.chat(HELLO)
            assert caplog.records == []
            with caplog.at_level(logging.DEBUG, logger="llmtap"):
                await client.chat(HELLO)
    events = [record.getMessage().split(" ", 1)[0] for record in caplog.records]
    assert events == ["llm_request_started", "llm_first_chunk", "llm_request_finished"]
    ids = {record.llmtap["call_id"] for record in caplog.records}
    assert len(ids) == 1


# --- every call ends with one record; headers from hooks; hooks for every call ---------------


async def test_a_stream_closed_early_ends_with_request_cancelled() -> None:
    """A caller that stops reading before the answer ended gets no RequestFinished: the
    call's last record is RequestCancelled, once (an adapter keeping per-call state, such as
    a span or an in-flight gauge, is never left waiting)."""
    records = Records()
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="one two three four five six", delay_between=0.01))
        async with LLMClient(_config(server.url, records)) as client:
            async with client.stream(HELLO) as stream:
                async for _event in stream:
                    break
    assert records.kinds == ["RequestStarted", "FirstChunk", "RequestCancelled"]
    cancelled = records.records[-1]
    assert cancelled == records.of(type(cancelled))[0]
    assert (cancelled.call_id, cancelled.attempts) == (records.records[0].call_id, 1)


async def test_a_cancelled_task_ends_its_call_with_request_cancelled() -> None:
    """A task cancelled while its call waits for the headers: RequestCancelled, not
    RequestFailed, and nothing after it."""
    records = Records()
    async with TestServer(dialect="openai") as server:
        server.script(Reply(text="late", delay_before_headers=5))
        async with LLMClient(_config(server.url, records)) as client:
            task = asyncio.create_task(client.chat(HELLO))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
    assert records.kinds == ["RequestStarted", "RequestCancelled"]


async def test_a_stream_read_to_its_end_is_not_cancelled() -> None:
    """Closing a stream after its end adds nothing: RequestFinished was its last record."""
    records = Records()
    async with TestServer(dialect="openai") as server:
        async with LLMClient(_config(server.url, records)) as client:
            async with client.stream(HELLO) as stream:
                await stream.result()
            chunks = [chunk async for chunk in client.stream_chat(HELLO)]
    assert chunks
    assert records.kinds == ["RequestStarted", "FirstChunk", "RequestFinished"] * 2


async def test_headers_a_hook_adds_are_sent_with_every_attempt() -> None:
    """What a hook puts in RequestStarted.headers goes out with each attempt (retries
    included), beside llmtap's own headers."""

    def tag(record: HookRecord) -> None:
        if isinstance(record, RequestStarted):
            record.headers["traceparent"] = f"00-{'1' * 32}-{'2' * 16}-01"

    async with TestServer(dialect="openai") as server:
        server.script(Reply(status=503), Reply(text="ok"))
        config = LLMConfig(endpoint=server.url, model="m", hooks=[tag])
        async with LLMClient(config) as client:
            with no_retry_waits():
                result = await client.chat(HELLO)
        sent = [request.headers.get("traceparent") for request in server.requests]
        assert result.text == "ok"
        assert sent == [f"00-{'1' * 32}-{'2' * 16}-01"] * 2
        assert {request.headers["content-type"] for request in server.requests} == {
            "application/json"
        }


async def test_an_installed_hook_sees_every_client_and_router() -> None:
    """install() gives a hook the records of every call in the process, after the call's own
    hooks; uninstall() stops it."""
    from llmtap._hooks import install, uninstall

    seen = Records()
    own = Records()
    async with TestServer(dialect="openai") as server:
        install(seen)
        install(seen)  # twice: still once
        try:
            async with LLMClient(_config(server.url, own)) as client:
                await client.chat(HELLO)
            async with Router([{"endpoint": server.url, "model": "gpt-4o-mini"}]) as router:
                await router.chat(HELLO)
        finally:
            uninstall(seen)
        async with LLMClient(LLMConfig(endpoint=server.url, model="m")) as client:
            await client.chat(HELLO)
    assert own.kinds == ["RequestStarted", "FirstChunk", "RequestFinished"]
    assert seen.kinds == ["RequestStarted", "FirstChunk", "RequestFinished"] * 2


async def test_the_end_records_carry_url_body_and_chunks() -> None:
    """RequestFinished names the URL that answered, the body that got the answer and how
    many chunks it came in; its text and result are built on demand."""
    records = Records()
    async with TestServer(dialect="openai") as server:
        server.script(Reply(chunks=["a", "b", "c"], usage=(4, 3)))
        async with LLMClient(_config(server.url, records)) as client:
            await client.chat(HELLO)
    finished = records.of(RequestFinished)[0]
    assert isinstance(finished, RequestFinished)
    assert finished.url == server.url
    assert finished.body is not None
    assert b'"hello"' in finished.body
    # role chunk, three text chunks, finish chunk, usage chunk
    assert finished.chunks == 6
    assert finished.text == "abc"
    assert finished.result is not None
    assert finished.result.text == "abc"
    assert finished.result.usage.completion_tokens == 3
