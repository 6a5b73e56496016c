"""Lifecycle hooks: small frozen records of what a call goes through, handed to plain callables.

The attempt loop emits them, and nothing else does: a call starts (:class:`RequestStarted`),
each attempt that fails is reported with what happens next (:class:`AttemptFailed`), the first
chunk of an answer arrives (:class:`FirstChunk`), and the call ends (:class:`RequestFinished`
or :class:`RequestFailed`). Telemetry, metrics and llmtap's own DEBUG log are adapters over
these records, not code paths of their own.

Every call that starts ends with exactly one of :class:`RequestFinished`,
:class:`RequestFailed` or :class:`RequestCancelled` (the caller stopped reading, or its task
was cancelled), so an adapter that keeps per-call state never leaks it.

A hook is a function (or a coroutine function, which is awaited) taking one record. One that
raises is logged once (``llm_hook_failed``) and never breaks a call. With no hooks the loop
builds no record at all. :func:`install` adds a hook to every call in the process (what
``llmtap.otel.instrument()`` uses).

Example:
    >>> def show(record: HookRecord) -> None:
    ...     if isinstance(record, AttemptFailed):
    ...         print(f"attempt {record.attempt}: {record.error}; again: {record.will_retry}")
    >>> client = LLMClient(LLMConfig(hooks=[show]))
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

import orjson

from llmtap._errors import LLMError
from llmtap._log import get_logger
from llmtap._results import ChatResult, Timings, Usage, trusted

__all__ = [
    "AttemptFailed",
    "FirstChunk",
    "Hook",
    "HookRecord",
    "Hooks",
    "RequestCancelled",
    "RequestFailed",
    "RequestFinished",
    "RequestStarted",
    "install",
    "installed",
    "timings_of",
    "uninstall",
    "usage_in",
]

_log = get_logger()

#: No Ollama metrics (an answer from any other server).
_NO_METRICS: Mapping[str, Any] = MappingProxyType({})

#: What a call does: a chat answer, or embeddings.
Operation = Literal["chat", "embeddings"]


@dataclass(frozen=True, slots=True)
class RequestStarted:
    """A call begins (before its first attempt is sent).

    Attributes:
        call_id: Tells this call's records apart from other calls' (unique in the process).
        operation: ``"chat"`` or ``"embeddings"``.
        model: The model asked for (``None``: each router endpoint's own).
        endpoint: The endpoint's URL (without a password); ``None`` for a router, which
            picks one per attempt.
        server: The kind of server, when preflight has found it.
        stream: Whether the answer is streamed.
        attempt: The attempt about to be sent: 1.
        body: The first attempt's request body as sent (JSON), for adapters that record
            parameters or (when asked to) messages; ``None`` for a router (its end record
            holds the body that got the answer).
        headers: HTTP headers sent with every attempt of the call, besides llmtap's own:
            a hook may add to them (the OpenTelemetry hook puts the W3C ``traceparent``
            here, so that the server continues the caller's trace).
    """

    call_id: int
    operation: Operation
    model: str | None
    endpoint: str | None
    server: str | None
    stream: bool
    attempt: int = 1
    body: bytes | None = None
    headers: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    @property
    def payload(self) -> Mapping[str, Any] | None:
        """The request body decoded (decoded on each access)."""
        if self.body is None:
            return None
        payload: Mapping[str, Any] = orjson.loads(self.body)
        return payload


@dataclass(frozen=True, slots=True)
class FirstChunk:
    """The first chunk of an attempt's answer arrived: the server has begun answering.

    Attributes:
        call_id: The call.
        attempt: Which attempt (1 for the first).
        endpoint: The endpoint answering (its URL, or its router name).
        time_to_first_chunk: Seconds from the start of the call.
    """

    call_id: int
    attempt: int
    endpoint: str
    time_to_first_chunk: float


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    """An attempt failed, and this is what happens next.

    Attributes:
        call_id: The call.
        attempt: Which attempt failed (1 for the first).
        endpoint: The endpoint it went to.
        error: What it raised.
        will_retry: Whether another attempt follows.
        action: What follows: ``"retry"``, ``"refit"`` (the same request, changed the way
            the server asked), ``"resume"`` (the answer continued where it broke),
            ``"restart"`` (an answer nobody had seen started over) or ``"raise"``.
        wait: Seconds waited before the next attempt.
        reason: Why nothing follows (``""`` when something does).
    """

    call_id: int
    attempt: int
    endpoint: str
    error: LLMError
    will_retry: bool
    action: str
    wait: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class RequestFinished:
    """The call ended with a whole answer.

    Attributes:
        call_id: The call.
        endpoint: The endpoint that answered (its URL, or its router name).
        server: The kind of server that answered, as far as known.
        model: The model that answered, as the server named it (else as asked).
        attempts: Attempts made (refits included).
        finish_reason: Why the answer ended (``None`` for embeddings).
        response_id: The answer's id, where the server gave one.
        chunks: How many chunks the answer came in (1 for an answer that was not streamed).
        url: The URL of the endpoint that answered (without a password).
        body: The request body (JSON) that got the answer.
        usage: Token counts, where the server sent them (built when read).
        timings: Time to first token, total, tokens per second, and the server's own
            durations where it reports them (built when read).
        text: The answer's text (built when read).
        result: The whole :class:`ChatResult`, for a chat answer read as typed events (built
            when read; ``None`` for a raw chunk stream and for embeddings).
    """

    call_id: int
    endpoint: str
    server: str | None
    model: str | None
    attempts: int
    finish_reason: str | None
    response_id: str | None
    #: What ``usage``, ``timings``, ``text`` and ``result`` are built from, only when read:
    #: the usage (a ``Usage``, or a raw stream's last chunk holding its counts, or ``None``),
    #: the server's own figures (Ollama's metrics, llama.cpp's timings), the call's clock
    #: readings (its start, its first output, its end), and what gathered the answer (an
    #: accumulator of typed events, or a raw decoder).
    source: tuple[Any, Mapping[str, Any], float, float | None, float, Any] = field(
        repr=False, compare=False, default=(None, _NO_METRICS, 0.0, None, 0.0, None)
    )
    chunks: int = 0
    url: str | None = None
    body: bytes | None = field(default=None, repr=False)

    @property
    def usage(self) -> Usage | None:
        """Token counts, where the server sent them (built on each read)."""
        counts = self.source[0]
        if counts is None or isinstance(counts, Usage):
            return counts
        return usage_in(counts)

    @property
    def tokens(self) -> tuple[int | None, int | None]:
        """The prompt and completion token counts the server sent, without building a
        :class:`Usage` (``(None, None)`` when it sent none)."""
        counts = self.source[0]
        if counts is None:
            return None, None
        if isinstance(counts, Usage):
            return counts.prompt_tokens, counts.completion_tokens
        return _counts_in(counts) or (None, None)

    @property
    def timings(self) -> Timings:
        """Time to the first token, in all, tokens per second, and the server's own durations
        (seconds; built on each read)."""
        _counts, metrics, started, first_at, ended, _output = self.source
        return timings_of(metrics, self.usage, started, first_at, ended)

    @property
    def text(self) -> str:
        """The answer's text (built on each read; ``""`` for embeddings)."""
        output = self.source[5]
        text = getattr(output, "text", "")
        return text if isinstance(text, str) else ""

    @property
    def result(self) -> ChatResult | None:
        """The answer as a :class:`ChatResult` (built on each read), for an answer read as
        typed events; ``None`` for a raw chunk stream, for embeddings, and for an answer
        whose tool call arguments could not be decoded."""
        output = self.source[5]
        build = getattr(output, "result", None)
        if not callable(build):
            return None
        try:
            result: ChatResult = build(server=self.server, timings=self.timings)
        except LLMError:
            return None
        return result


@dataclass(frozen=True, slots=True)
class RequestFailed:
    """The call ended with an error (after its last attempt, or when the caller's stream
    broke after output).

    Attributes:
        call_id: The call.
        endpoint: The endpoint of the last attempt (``None``: none was reached).
        attempts: Attempts made.
        error: What the caller gets.
        url: The URL of the endpoint of the last attempt (without a password).
        body: The last attempt's request body (JSON).
        server: The kind of that endpoint's server, as far as known.
    """

    call_id: int
    endpoint: str | None
    attempts: int
    error: LLMError
    url: str | None = None
    body: bytes | None = field(default=None, repr=False)
    server: str | None = None


@dataclass(frozen=True, slots=True)
class RequestCancelled:
    """The call ended before its answer did, and not by an error: the caller closed the
    stream (or broke out of its loop), or the task running the call was cancelled.

    Attributes:
        call_id: The call.
        endpoint: The endpoint of the attempt under way (``None``: none was reached).
        attempts: Attempts made.
        url: The URL of that endpoint (without a password).
        body: That attempt's request body (JSON).
        server: The kind of that endpoint's server, as far as known.
    """

    call_id: int
    endpoint: str | None
    attempts: int
    url: str | None = None
    body: bytes | None = field(default=None, repr=False)
    server: str | None = None


def _count(value: Any) -> int | float | None:
    return value if type(value) is int or type(value) is float else None


def _counts_in(chunk: Mapping[str, Any]) -> tuple[int | None, int | None] | None:
    """The prompt and completion counts a raw stream's chunk carries (OpenAI's ``usage``,
    or Ollama's ``prompt_eval_count`` and ``eval_count``); ``None`` when it carries none."""
    usage = chunk.get("usage")
    if type(usage) is dict:
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    elif "eval_count" in chunk or "prompt_eval_count" in chunk:
        prompt, completion = chunk.get("prompt_eval_count"), chunk.get("eval_count")
    else:
        return None
    return (
        prompt if type(prompt) is int else None,
        completion if type(completion) is int else None,
    )


def usage_in(chunk: Mapping[str, Any]) -> Usage | None:
    """The token counts a raw stream's chunk carries (OpenAI's ``usage``, or Ollama's
    ``prompt_eval_count`` and ``eval_count``); ``None`` when it carries none."""
    counts = _counts_in(chunk)
    if counts is None:
        return None
    prompt, completion = counts
    return trusted(
        Usage,
        prompt_tokens=prompt,
        completion_tokens=completion,
        total_tokens=(prompt or 0) + (completion or 0),
    )


def timings_of(
    metrics: Mapping[str, Any],
    usage: Usage | None,
    started: float,
    first_at: float | None,
    ended: float,
) -> Timings:
    """An answer's :class:`Timings`: to the first output and in all (the client's clock), and
    the server's own figures where ``metrics`` hold them: its generation speed (else the
    completion tokens of ``usage`` counted from the first output to the end), the time it
    spent on the prompt and on the answer, and Ollama's model load.

    Args:
        metrics: The server's own figures: Ollama's native counters and nanosecond durations
            (``eval_count``, ``eval_duration``, ``prompt_eval_duration``, ``load_duration``),
            or llama.cpp's ``timings`` object under ``"timings"`` (``predicted_per_second``,
            ``prompt_ms``, ``predicted_ms``); a raw stream's last chunk holds either.
        usage: The answer's token counts, where known.
        started: When the call started (the loop's clock).
        first_at: When its first output arrived (``None``: none did).
        ended: When it ended.
    """
    speed: float | None = None
    prompt: float | None = None
    generation: float | None = None
    own = metrics.get("timings")
    if type(own) is dict:  # llama.cpp: milliseconds, and its own speed
        speed = _count(own.get("predicted_per_second"))
        prompt_ms, predicted_ms = _count(own.get("prompt_ms")), _count(own.get("predicted_ms"))
        prompt = None if prompt_ms is None else prompt_ms / 1e3
        generation = None if predicted_ms is None else predicted_ms / 1e3
    else:  # Ollama: nanoseconds
        evals, eval_ns = _count(metrics.get("eval_count")), _count(metrics.get("eval_duration"))
        if evals and eval_ns:
            speed = evals / (eval_ns / 1e9)
        prompt_ns = _count(metrics.get("prompt_eval_duration"))
        prompt = None if prompt_ns is None else prompt_ns / 1e9
        generation = None if eval_ns is None else eval_ns / 1e9
    if not speed or speed < 0:
        completion_tokens = usage.completion_tokens if usage is not None else None
        speed = None
        if completion_tokens and first_at is not None and ended > first_at:
            speed = completion_tokens / (ended - first_at)
    load = _count(metrics.get("load_duration"))
    return trusted(
        Timings,
        time_to_first_token=None if first_at is None else first_at - started,
        total=ended - started,
        tokens_per_second=speed,
        load_duration=None if load is None else load / 1e9,
        prompt_duration=prompt,
        generation_duration=generation,
    )


HookRecord = (
    RequestStarted | FirstChunk | AttemptFailed | RequestFinished | RequestFailed | RequestCancelled
)
"""Every record a hook may receive."""

Hook = Callable[[HookRecord], Awaitable[None] | None]
"""A hook: a function or coroutine function taking one :data:`HookRecord`."""


class Hooks:
    """The hooks of one call, called in order; a hook that raises is logged (once per hook)
    and skipped.

    Args:
        hooks: The hooks.
    """

    __slots__ = ("_hooks",)

    #: Hooks that have raised, by id, so that each is logged once.
    _failed: set[int] = set()  # noqa: RUF012  (shared on purpose: once per process)

    def __init__(self, hooks: Iterable[Hook]) -> None:
        self._hooks = tuple(hooks)

    def __bool__(self) -> bool:
        return bool(self._hooks)

    def __add__(self, other: Hooks) -> Hooks:
        return Hooks((*self._hooks, *other._hooks))

    def emit(self, record: HookRecord) -> Awaitable[None] | None:
        """Hand ``record`` to every hook. What the coroutine hooks returned comes back as one
        awaitable, to be awaited before the call goes on; ``None`` when there is none (sync
        hooks cost no coroutine)."""
        pending: list[Awaitable[None]] | None = None
        for hook in self._hooks:
            try:
                outcome = hook(record)
            except Exception as exc:  # a hook must never break a call
                _broken(hook, record, exc)
                continue
            if outcome is not None:
                if pending is None:
                    pending = []
                pending.append(_guarded(hook, record, outcome))
        return None if pending is None else _in_order(pending)

    def emit_soon(self, record: HookRecord) -> None:
        """Hand ``record`` to every hook from code that cannot wait (a stream closing, a
        task being cancelled): what coroutine hooks return runs in a task of its own."""
        waiting = self.emit(record)
        if waiting is not None:
            task = asyncio.ensure_future(waiting)
            _pending.add(task)
            task.add_done_callback(_pending.discard)


#: Hooks every call in the process gets (see :func:`install`); ``None``: none.
_process: Hooks | None = None
#: Tasks running coroutine hooks handed a record by :meth:`Hooks.emit_soon`.
_pending: set[asyncio.Future[None]] = set()


def install(hook: Hook) -> None:
    """Give ``hook`` every record of every call in the process (every client and router,
    made before or after), after their own hooks. Installing a hook again does nothing."""
    global _process
    hooks = _process._hooks if _process is not None else ()
    if any(existing is hook for existing in hooks):
        return
    _process = Hooks((*hooks, hook))


def uninstall(hook: Hook) -> None:
    """Stop giving ``hook`` the records of every call (:func:`install` undone)."""
    global _process
    hooks = tuple(h for h in (_process._hooks if _process is not None else ()) if h is not hook)
    _process = Hooks(hooks) if hooks else None


def installed() -> Hooks | None:
    """The hooks every call gets (:func:`install`); ``None`` when there are none."""
    return _process


async def _guarded(hook: Hook, record: HookRecord, outcome: Awaitable[None]) -> None:
    try:
        await outcome
    except Exception as exc:
        _broken(hook, record, exc)


async def _in_order(pending: list[Awaitable[None]]) -> None:
    for waiting in pending:
        await waiting


def _broken(hook: Hook, record: HookRecord, exc: Exception) -> None:
    if id(hook) not in Hooks._failed:
        Hooks._failed.add(id(hook))
        _log.error(
            "llm_hook_failed",
            hook=getattr(hook, "__qualname__", repr(hook)),
            record=type(record).__name__,
            error=f"{type(exc).__name__}: {exc}",
        )


def log_debug(record: HookRecord) -> None:
    """llmtap's DEBUG log as a hook: one line per record of a call (``llm_request_started``,
    ``llm_first_chunk``, ``llm_attempt_failed``, ``llm_request_finished``,
    ``llm_request_failed``, ``llm_request_cancelled``), each with the call's ``call_id``."""
    if isinstance(record, RequestStarted):
        _log.debug(
            "llm_request_started",
            call_id=record.call_id,
            operation=record.operation,
            model=record.model,
            url=record.endpoint,
            stream=record.stream,
            attempt=record.attempt,
        )
    elif isinstance(record, FirstChunk):
        _log.debug(
            "llm_first_chunk",
            call_id=record.call_id,
            attempt=record.attempt,
            endpoint=record.endpoint,
            seconds=round(record.time_to_first_chunk, 4),
        )
    elif isinstance(record, AttemptFailed):
        _log.debug(
            "llm_attempt_failed",
            call_id=record.call_id,
            attempt=record.attempt,
            endpoint=record.endpoint,
            error=f"{type(record.error).__name__}: {record.error.message}",
            request_id=record.error.request_id,
            next=record.action,
            wait=round(record.wait, 3),
        )
    elif isinstance(record, RequestFinished):
        usage = record.usage
        _log.debug(
            "llm_request_finished",
            call_id=record.call_id,
            endpoint=record.endpoint,
            model=record.model,
            attempts=record.attempts,
            finish_reason=record.finish_reason,
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
            seconds=round(record.timings.total or 0.0, 4),
            response_id=record.response_id,
        )
    elif isinstance(record, RequestCancelled):
        _log.debug(
            "llm_request_cancelled",
            call_id=record.call_id,
            endpoint=record.endpoint,
            attempts=record.attempts,
        )
    else:
        _log.debug(
            "llm_request_failed",
            call_id=record.call_id,
            endpoint=record.endpoint,
            attempts=record.attempts,
            error=f"{type(record.error).__name__}: {record.error.message}",
            request_id=record.error.request_id,
        )
