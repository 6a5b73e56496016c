"""The fault matrix: every fault × every call path × every dialect, against real loopback
servers. Each cell checks the outcome the rules give (``faults.EXPECTED``), that the caller
never got a token twice, that the call honoured its deadline, and that no connection is left
checked out and no task left running."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack
from typing import Any

import pytest

from llmtap import (
    AttemptFailed,
    HookRecord,
    LLMClient,
    LLMConfig,
    LLMResponseError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    Message,
    RequestFailed,
    Router,
    TextDelta,
)
from llmtap.testing import Reply, TestServer, no_retry_waits
from tests.otel_kit import Telemetry, check_one_span, otel_installed
from tests.reliability.faults import (
    ANSWER,
    CHAT_PATHS,
    CHUNK_PATHS,
    DIALECTS,
    EXPECTED,
    FAULTS,
    FAULTS_BY_NAME,
    KNOWN_BUGS,
    MARGIN,
    MAX_LINE_BYTES,
    MAX_RETRIES,
    PREFLIGHT_FAULTS,
    ROOMY_DEADLINE,
    ROUTER_EXPECTED,
    TINY_DEADLINE,
    Delivered,
    Fault,
    Outcome,
    words_before_mid,
)
from tests.reliability.hostile import PREFLIGHT_ANSWERS, RawServer, error_status

HELLO = [Message.user("hello")]
#: Dialects the router cells run on (one SSE, one NDJSON).
ROUTER_DIALECTS = ("openai", "ollama_native")


class RetryLog(logging.Handler):
    """Counts llmtap's retry events (``llm_retry``, ``router_retry``)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.names: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.names.append(record.getMessage().split(" ", 1)[0])

    def count(self, name: str) -> int:
        return self.names.count(name)


@pytest.fixture
def retry_log() -> Iterator[RetryLog]:
    logger = logging.getLogger("llmtap")
    handler = RetryLog()
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


class Records:
    """A hook that keeps every record, for the exact sequence a cell must give."""

    def __init__(self) -> None:
        self.records: list[HookRecord] = []

    def __call__(self, record: HookRecord) -> None:
        self.records.append(record)

    def sequence(self) -> list[str]:
        """Each record's type, with ``AttemptFailed`` marked by whether a retry follows."""
        return [
            f"AttemptFailed({'retry' if record.will_retry else 'final'})"
            if isinstance(record, AttemptFailed)
            else type(record).__name__
            for record in self.records
        ]


def expected_records(fault: Fault, outcome: Outcome) -> list[str]:
    """The hooks' records the rules give: the call starts; each failed attempt is reported
    with whether another follows (after its first chunk, when the fault let one arrive); the
    call ends with its answer (after that attempt's first chunk) or its error."""
    chunk_first = ["FirstChunk"] if fault.at == "mid" or fault.leaks_chunk else []
    records = ["RequestStarted"]
    if outcome.kind == "ok":
        records += [*chunk_first, "AttemptFailed(retry)"] * (outcome.attempts - 1)
        return [*records, "FirstChunk", "RequestFinished"]
    if outcome.kind == "interrupted":
        return [*records, "FirstChunk", "AttemptFailed(final)", "RequestFailed"]
    records += [*chunk_first, "AttemptFailed(retry)"] * (outcome.attempts - 1)
    return [*records, *chunk_first, "AttemptFailed(final)", "RequestFailed"]


@pytest.fixture(autouse=True)
def _no_waits() -> Iterator[None]:
    with no_retry_waits():
        yield


def settings(url: str, dialect: str, fault: Fault | None, **extra: Any) -> LLMConfig:
    """The client's settings for one cell: tiny the deadline the fault trips, roomy the rest."""
    spec = DIALECTS[dialect]
    deadline = fault.deadline if fault else None
    values: dict[str, Any] = {
        "endpoint": url,
        "model": "llama3.2",
        "api": spec.api,
        "max_retries": MAX_RETRIES,
        "connect_timeout": ROOMY_DEADLINE,
        "first_token_timeout": TINY_DEADLINE if deadline == "first_token" else ROOMY_DEADLINE,
        "idle_timeout": TINY_DEADLINE if deadline == "idle" else ROOMY_DEADLINE,
        "preflight_timeout": ROOMY_DEADLINE,
        "max_line_bytes": MAX_LINE_BYTES,
    }
    return LLMConfig(**(values | extra))


def chunk_text(chunk: dict[str, Any]) -> str:
    """The text content of a raw chunk dict (OpenAI-style, native Ollama, or a Responses
    API event)."""
    if chunk.get("type") == "response.output_text.delta":
        return str(chunk.get("delta") or "")
    choices = chunk.get("choices")
    if choices:
        return (choices[0].get("delta") or {}).get("content") or ""
    message = chunk.get("message")
    return (message.get("content") or "") if isinstance(message, dict) else ""


async def call(target: LLMClient | Router, path: str, delivered: Delivered) -> str:
    """Make the call ``path`` names, recording what reaches the caller; the answer's text."""
    if path in CHUNK_PATHS:
        method = target.stream_chat if path == "stream_chat" else target.stream_chat_with_retry
        async for chunk in method(HELLO):
            delivered.chunks += 1
            delivered.pieces.append(chunk_text(chunk))
        return delivered.text
    if path == "stream":
        async with target.stream(HELLO) as stream:
            async for event in stream:
                delivered.chunks += 1
                if type(event) is TextDelta:
                    delivered.pieces.append(event.text)
            result = await stream.result()
        return result.text
    result = await target.chat(HELLO, stream=path == "chat_stream")
    return result.text


def time_bound(fault: Fault, outcome: Outcome) -> float:
    """The longest the call may take: each attempt's deadline, plus the margin."""
    tripped = 1 if fault.deadline else 0  # only the first reply stalls
    return tripped * TINY_DEADLINE + (outcome.attempts - tripped) * ROOMY_DEADLINE + MARGIN


def check(
    outcome: Outcome,
    fault: Fault,
    dialect: str,
    error: BaseException | None,
    text: str | None,
    delivered: Delivered,
) -> None:
    """The cell's outcome, error details and delivered text are what the rules give."""
    assert ANSWER.startswith(delivered.text), f"not a prefix of the answer: {delivered.text!r}"
    if outcome.kind == "ok":
        assert error is None, f"expected success, got {error!r}"
        assert text == ANSWER
        return
    assert text is None
    if outcome.kind == "interrupted":
        assert type(error) is LLMStreamInterrupted, f"expected interrupted, got {error!r}"
        assert type(error.__cause__) is outcome.error, f"cause: {error.__cause__!r}"
        partial = words_before_mid(dialect) if fault.at == "mid" else ""
        assert delivered.text == partial
        assert error.partial_text == partial
        assert error.chunks_received == delivered.chunks
        cause = error.__cause__
    else:
        assert type(error) is outcome.error, f"expected {outcome.error}, got {error!r}"
        assert delivered.chunks == 0
        cause = error
    if fault.deadline is not None:
        assert isinstance(cause, LLMTimeoutError)
        assert cause.deadline == fault.deadline
    if fault.status is not None:
        assert isinstance(cause, LLMResponseError)
        assert cause.status_code == fault.status
        assert cause.retry_after == fault.retry_after


async def run_cell(
    target: LLMClient | Router, path: str, bound: float
) -> tuple[BaseException | None, str | None, Delivered, float]:
    """Make the call, stopped at ``bound`` seconds (a client ignoring its deadline fails the
    cell there, instead of hanging it): its error or text, what was delivered, and its time."""
    loop = asyncio.get_running_loop()
    delivered = Delivered()
    error: BaseException | None = None
    text: str | None = None
    started = loop.time()
    try:
        async with asyncio.timeout(bound):
            text = await call(target, path, delivered)
    except Exception as exc:
        error = exc
    return error, text, delivered, loop.time() - started


def script(server: TestServer, fault: Fault, path: str, dialect: str) -> None:
    """The fault's reply, then good answers for the retries."""
    assert fault.script is not None
    spec = DIALECTS[dialect]
    reply = fault.script(path != "chat_whole", spec.api == "ollama")
    if spec.shift and fault.at == "mid":
        reply = _shifted(reply, spec.shift)
    server.script(reply, Reply(text=ANSWER), Reply(text=ANSWER))


#: The Reply fields that count chunks before a fault fires.
_COUNTS = ("reset_after", "malformed_after", "error_after", "truncate_after",
           "invalid_utf8_after", "cut_mid_chunk_after")  # fmt: skip


def _shifted(reply: Reply, shift: int) -> Reply:
    """``reply`` with its mid-stream fault ``shift`` chunks later."""
    changes: dict[str, Any] = {
        name: getattr(reply, name) + shift for name in _COUNTS if getattr(reply, name) is not None
    }
    if reply.stall_after is not None:
        count, seconds = reply.stall_after
        changes["stall_after"] = (count + shift, seconds)
    return dataclasses.replace(reply, **changes)


def cell(dialect: str, fault_name: str, path: str) -> Any:
    """One parametrized cell, named after it, marked if it is a known bug."""
    bug = KNOWN_BUGS.get((fault_name, path))
    marks = [pytest.mark.xfail(strict=True, reason=bug)] if bug else []
    return pytest.param(dialect, fault_name, path, id=f"{dialect}-{path}-{fault_name}", marks=marks)


def client_cells() -> Iterator[Any]:
    for dialect in DIALECTS:
        for fault in FAULTS:
            if dialect not in fault.dialects:
                continue
            for path in CHAT_PATHS:
                if (fault.name, path) in EXPECTED:
                    yield cell(dialect, fault.name, path)


@pytest.mark.parametrize(("dialect", "fault_name", "path"), list(client_cells()))
async def test_client_cell(dialect: str, fault_name: str, path: str, retry_log: RetryLog) -> None:
    """An LLMClient meeting this fault on this path ends as the table says, on time, clean."""
    fault = FAULTS_BY_NAME[fault_name]
    outcome = EXPECTED[fault_name, path]
    spec = DIALECTS[dialect]
    tasks_before = asyncio.all_tasks()
    records = Records()
    telemetry = Telemetry() if otel_installed() else None
    hooks = [records] if telemetry is None else [records, telemetry.hook]
    async with TestServer(dialect=spec.server, models=[spec.model]) as server:
        client = LLMClient(settings(server.url, dialect, fault, hooks=hooks))
        try:
            if fault.kept_alive:
                server.script(Reply(text=ANSWER))
                await client.chat(HELLO)  # leaves a kept-alive connection in the pool
                server.requests.clear()
                records.records.clear()
                if telemetry is not None:
                    telemetry.clear()
            if fault.persistent:
                await server.stop()
            else:
                script(server, fault, path, dialect)
            error, text, delivered, elapsed = await run_cell(
                client, path, time_bound(fault, outcome)
            )
            in_use = client.connections_in_use
        finally:
            await client.close()
        requests = len(server.chat_requests)
        if spec.api == "responses":  # every attempt went to /v1/responses
            assert len(server.responses_requests) == requests
    check(outcome, fault, dialect, error, text, delivered)
    assert requests == (0 if fault.persistent else outcome.attempts + outcome.resent)
    assert retry_log.count("llm_retry") == outcome.attempts - 1
    assert records.sequence() == expected_records(fault, outcome)
    if error is not None:
        assert isinstance(records.records[-1], RequestFailed)
        assert records.records[-1].error is error
    if telemetry is not None:
        check_one_span(telemetry, records.records, error)
    assert in_use == 0
    assert elapsed <= time_bound(fault, outcome)
    assert asyncio.all_tasks() == tasks_before


def router_cells() -> Iterator[Any]:
    for dialect in ROUTER_DIALECTS:
        for fault in FAULTS:
            if dialect not in fault.dialects:
                continue
            for path in CHAT_PATHS:
                if (fault.name, path) in ROUTER_EXPECTED:
                    yield cell(dialect, fault.name, path)


async def _router_servers(stack: AsyncExitStack, dialect: str) -> AsyncIterator[TestServer]:
    spec = DIALECTS[dialect]
    for _ in range(2):
        yield await stack.enter_async_context(TestServer(dialect=spec.server, models=[spec.model]))


@pytest.mark.parametrize(("dialect", "fault_name", "path"), list(router_cells()))
async def test_router_cell(dialect: str, fault_name: str, path: str, retry_log: RetryLog) -> None:
    """A Router whose first endpoint has this fault ends as the table says, on time, clean."""
    fault = FAULTS_BY_NAME[fault_name]
    outcome = ROUTER_EXPECTED[fault_name, path]
    tasks_before = asyncio.all_tasks()
    records = Records()
    telemetry = Telemetry() if otel_installed() else None
    async with AsyncExitStack() as stack:
        faulty, healthy = [server async for server in _router_servers(stack, dialect)]
        healthy.script(Reply(text=ANSWER), Reply(text=ANSWER))
        if fault.persistent:
            await faulty.stop()
        else:
            script(faulty, fault, path, dialect)
        router = Router(
            [settings(s.url, dialect, fault) for s in (faulty, healthy)],
            strategy="failover",
            max_retries=MAX_RETRIES,
            hooks=[records] if telemetry is None else [records, telemetry.hook],
        )
        try:
            error, text, delivered, elapsed = await run_cell(
                router, path, time_bound(fault, outcome)
            )
            in_use = sum(client.connections_in_use for client in router.clients)
        finally:
            await router.close()
        requests = (len(faulty.chat_requests), len(healthy.chat_requests))
    check(outcome, fault, dialect, error, text, delivered)
    if fault.persistent:
        assert requests == (0, 1)
    else:
        assert requests == (1 + outcome.resent, outcome.attempts - 1)
    assert retry_log.count("router_retry") == (0 if fault.persistent else outcome.attempts - 1)
    assert records.sequence() == expected_records(fault, outcome)
    if error is not None:
        assert isinstance(records.records[-1], RequestFailed)
        assert records.records[-1].error is error
    if telemetry is not None:
        check_one_span(telemetry, records.records, error)
    assert in_use == 0
    assert elapsed <= time_bound(fault, outcome)
    assert router.background_tasks == 0
    assert asyncio.all_tasks() == tasks_before


def preflight_cells() -> Iterator[Any]:
    for name in PREFLIGHT_FAULTS:
        dialects = DIALECTS if name == "refused" else ("raw",)
        for dialect in dialects:
            yield cell(dialect, name, "preflight_check")


@pytest.mark.parametrize(("dialect", "fault_name", "path"), list(preflight_cells()))
async def test_preflight_cell(
    dialect: str, fault_name: str, path: str, retry_log: RetryLog
) -> None:
    """preflight_check meeting this fault raises the table's error at once, on time, clean.

    A stopped TestServer gives "refused" in each dialect; a raw server gives the rest, since
    what goes wrong with a GET does not depend on the dialect the server would have spoken.
    """
    outcome = EXPECTED[fault_name, path]
    fault = FAULTS_BY_NAME.get(fault_name)
    deadline = "preflight" if fault_name == "stall_before_headers" else None
    tasks_before = asyncio.all_tasks()
    async with AsyncExitStack() as stack:
        if fault_name == "refused":
            spec = DIALECTS[dialect]
            server = await stack.enter_async_context(TestServer(dialect=spec.server))
            url = server.url
            await server.stop()
        else:
            answer = PREFLIGHT_ANSWERS.get(fault_name)
            if answer is None:
                assert fault is not None
                assert fault.status is not None
                answer = error_status(fault.status, retry_after=fault.retry_after is not None)
            url = (await stack.enter_async_context(RawServer(answer))).url
        client = LLMClient(
            settings(
                url, "openai", None, preflight_timeout=TINY_DEADLINE if deadline else ROOMY_DEADLINE
            )
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            with pytest.raises(outcome.error) as info:  # type: ignore[arg-type]
                await client.preflight_check()
            elapsed = loop.time() - started
            in_use = client.connections_in_use
        finally:
            await client.close()
    assert type(info.value) is outcome.error
    if deadline is not None:
        assert isinstance(info.value, LLMTimeoutError)
        assert info.value.deadline == deadline
    if fault is not None and fault.status is not None:
        assert isinstance(info.value, LLMResponseError)
        assert info.value.status_code == fault.status
    assert retry_log.count("llm_retry") == 0
    assert in_use == 0
    assert elapsed <= (TINY_DEADLINE if deadline else ROOMY_DEADLINE) + MARGIN
    assert asyncio.all_tasks() == tasks_before
