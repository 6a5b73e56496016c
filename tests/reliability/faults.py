"""The fault matrix's vocabulary: faults, call paths, dialects, and the expected outcome of
every (fault, path) cell.

The expectations are derived here from llmtap's documented rules, never from running the
client:

1. Before any output reached the caller, a retryable failure (connection failure, timeout,
   408/409/429/5xx, an in-stream error object carrying such a numeric code) is retried up to
   ``max_retries`` times.
2. Once a chunk (``stream_chat*``) or an event (``stream``) reached the caller nothing is
   retried: ``LLMStreamInterrupted`` is raised, ``__cause__`` the specific error,
   ``.partial_text`` the text delivered.
3. ``chat()`` delivers nothing before it returns, so everything retryable is retried there,
   even mid-stream.
4. Non-retryable errors raise at once: ``LLMResponseError`` for statuses and in-stream errors
   without a retryable code (``LLMRateLimitError`` for 429), ``LLMStreamError`` for
   malformed, truncated, oversized or invalid UTF-8 streams; a 200 with an HTML body or a
   wrong content type is ``LLMResponseError``.
5. A request whose kept-alive connection is dropped before any answer (what a connection the
   server already closed looks like) is sent once more on a fresh connection. That is not a
   retry: no ``llm_retry`` event, not counted against ``max_retries``, so even
   ``stream_chat`` does it.

What a scripted fault puts on the wire in each dialect comes from ``WIRE.md``: an in-stream
error carries the integer code on llama.cpp and vLLM, no code on OpenAI and native Ollama,
and is lost by Ollama's ``/v1`` layer (one chunk with an empty delta, then the body ends).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import orjson

from llmtap import (
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMStreamError,
    LLMTimeoutError,
)
from llmtap.testing import Reply

#: The scripted answer: unique words, so a repeated token can never look like a prefix.
WORDS = ("alpha", " beta", " gamma", " delta", " epsilon", " zeta", " eta", " theta")
ANSWER = "".join(WORDS)

#: Mid-stream faults fire after this many chunks: the role chunk and two words on the
#: OpenAI-style dialects, three words on native Ollama (which has no role chunk).
MID = 3

#: How long a stalled server stays silent; far beyond the tiny deadlines below.
STALL = 5.0
#: The deadline a stall trips (first_token_timeout, idle_timeout, preflight_timeout).
TINY_DEADLINE = 0.3
#: The deadlines of cells where nothing stalls: never reached, they only bound a hang.
ROOMY_DEADLINE = 3.0
#: Added to a cell's worst legitimate duration, for shared and noisy machines.
MARGIN = 2.0

MAX_RETRIES = 2
MAX_LINE_BYTES = 4096
OVERSIZED = 4 * MAX_LINE_BYTES

#: The call paths. ``chat_stream`` is ``chat(stream=True)``, ``chat_whole`` ``chat(stream=False)``.
Path = Literal[
    "stream_chat",
    "stream_chat_with_retry",
    "stream",
    "chat_stream",
    "chat_whole",
    "preflight_check",
]
CHAT_PATHS: tuple[Path, ...] = (
    "stream_chat",
    "stream_chat_with_retry",
    "stream",
    "chat_stream",
    "chat_whole",
)
PATHS: tuple[Path, ...] = (*CHAT_PATHS, "preflight_check")
#: Paths on which every chunk dict reaches the caller as it arrives.
CHUNK_PATHS = frozenset({"stream_chat", "stream_chat_with_retry"})
#: Paths on which output reaches the caller before the call returns.
EXPOSED_PATHS = frozenset({"stream_chat", "stream_chat_with_retry", "stream"})


@dataclass(frozen=True)
class DialectSpec:
    """One wire dialect: the TestServer that speaks it and how the client is pointed at it."""

    server: Literal["openai", "ollama", "llamacpp", "vllm"]
    api: Literal["openai", "ollama", "responses"]
    model: str  # as the server lists it
    role_chunk: bool  # whether a content-less role chunk opens every stream
    #: Chunks without text before the first text beyond a role chunk's one: a Responses
    #: stream opens with four framing events (created, in_progress, the message item, its
    #: content part), so its mid-stream faults fire three events later.
    shift: int = 0


DIALECTS: dict[str, DialectSpec] = {
    "openai": DialectSpec("openai", "openai", "llama3.2", role_chunk=True),
    "ollama_v1": DialectSpec("ollama", "openai", "llama3.2:latest", role_chunk=True),
    "ollama_native": DialectSpec("ollama", "ollama", "llama3.2:latest", role_chunk=False),
    "llamacpp": DialectSpec("llamacpp", "openai", "llama3.2", role_chunk=True),
    "vllm": DialectSpec("vllm", "openai", "llama3.2", role_chunk=True),
    # OpenAI's Responses API in each server's shape (its errors after the 200 are checked per
    # server in tests/test_responses.py: each server signals them its own way).
    "responses_openai": DialectSpec("openai", "responses", "llama3.2", True, shift=3),
    "responses_ollama": DialectSpec("ollama", "responses", "llama3.2:latest", True, shift=3),
    "responses_llamacpp": DialectSpec("llamacpp", "responses", "llama3.2", True, shift=3),
    "responses_vllm": DialectSpec("vllm", "responses", "llama3.2", True, shift=3),
}
ALL_DIALECTS = frozenset(DIALECTS)

#: ``(streamed, native)`` → the reply that carries the fault.
Script = Callable[[bool, bool], Reply]


def _same(**fault: object) -> Script:
    """The scripted answer with ``fault`` set, whatever the path and dialect."""
    return lambda streamed, native: Reply(text=ANSWER, **fault)  # type: ignore[arg-type]


def _wrong_type_body(streamed: bool, native: bool) -> Reply:
    """A well-formed answer under ``Content-Type: text/plain``."""
    if not streamed:
        body = orjson.dumps(
            {
                "object": "chat.completion",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": ANSWER},
                        "finish_reason": "stop",
                    }
                ],
            }
        )
    elif native:
        lines = [{"message": {"role": "assistant", "content": w}, "done": False} for w in WORDS]
        lines.append({"message": {"role": "assistant", "content": ""}, "done": True})
        body = b"".join(orjson.dumps(line) + b"\n" for line in lines)
    else:
        events = [{"choices": [{"index": 0, "delta": {"content": w}}]} for w in WORDS]
        events.append({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
        body = b"".join(b"data: " + orjson.dumps(e) + b"\n\n" for e in events)
        body += b"data: [DONE]\n\n"
    return Reply(raw_body=body, content_type="text/plain; charset=utf-8")


def _oversized(streamed: bool, native: bool) -> Reply:
    if streamed:
        return Reply(oversized_line=OVERSIZED)
    return Reply(chunks=["x" * OVERSIZED])  # one whole JSON body over max_line_bytes


@dataclass(frozen=True)
class Fault:
    """One way for an exchange to go wrong.

    Attributes:
        name: Names the cell.
        error: The exact error one failed attempt raises.
        retryable: Whether that error is retryable under rule 1.
        at: ``"connect"`` (nothing listens), ``"before"`` (before any chunk) or ``"mid"``
            (after ``MID`` chunks).
        script: The reply that carries the fault (``None``: the server is stopped).
        streamed_only: The fault shapes a stream, so ``chat(stream=False)`` cannot meet it.
        status: The HTTP status (or in-stream code) the error carries.
        retry_after: The ``Retry-After`` the error carries.
        deadline: For timeouts, which deadline trips.
        dialects: The dialects whose wire carries this fault as described.
        leaks_chunk: Before failing, the server sends one chunk with no content: it reaches
            chunk-level callers but produces no event.
        kept_alive: The fault meets a request sent on a kept-alive connection (one good
            call warmed the pool first).
    """

    name: str
    error: type[LLMError]
    retryable: bool
    at: Literal["connect", "before", "mid"]
    script: Script | None
    streamed_only: bool = False
    status: int | None = None
    retry_after: float | None = None
    deadline: str | None = None
    dialects: frozenset[str] = ALL_DIALECTS
    leaks_chunk: bool = False
    kept_alive: bool = False

    @property
    def persistent(self) -> bool:
        """Every attempt meets it (the server is down), not only the first."""
        return self.script is None


RETRYABLE_STATUSES = (408, 409, 429, 500, 502, 503, 504)
FINAL_STATUSES = (400, 401, 403, 404, 422)
CODED = frozenset({"llamacpp", "vllm"})
UNCODED = frozenset({"openai", "ollama_native"})
LOST = frozenset({"ollama_v1"})


def _status_faults() -> list[Fault]:
    faults = []
    for status in (*RETRYABLE_STATUSES, *FINAL_STATUSES):
        error = LLMRateLimitError if status == 429 else LLMResponseError
        for retry_after in (None, 1.0):
            headers = {} if retry_after is None else {"Retry-After": "1"}
            faults.append(
                Fault(
                    f"status_{status}" + ("_retry_after" if retry_after else ""),
                    error,
                    status in RETRYABLE_STATUSES,
                    "before",
                    _same(status=status, headers=headers),
                    status=status,
                    retry_after=retry_after,
                )
            )
    return faults


FAULTS: tuple[Fault, ...] = (
    Fault("refused", LLMConnectionError, True, "connect", None),
    Fault(
        "reset_before_headers",
        LLMConnectionError,
        True,
        "before",
        _same(reset_before_headers=True),
    ),
    Fault(
        "reset_before_headers_kept_alive",
        LLMConnectionError,
        True,
        "before",
        _same(reset_before_headers=True),
        kept_alive=True,
    ),
    Fault("reset_after_headers", LLMConnectionError, True, "before", _same(reset_after=0)),
    Fault(
        "reset_mid",
        LLMConnectionError,
        True,
        "mid",
        _same(reset_after=MID),
        streamed_only=True,
    ),
    Fault(
        "stall_before_headers",
        LLMTimeoutError,
        True,
        "before",
        _same(delay_before_headers=STALL),
        deadline="first_token",
    ),
    Fault(
        "stall_mid",
        LLMTimeoutError,
        True,
        "mid",
        _same(stall_after=(MID, STALL)),
        streamed_only=True,
        deadline="idle",
    ),
    *_status_faults(),
    Fault(
        "malformed_before",
        LLMStreamError,
        False,
        "before",
        _same(malformed_after=0),
        streamed_only=True,
    ),
    Fault(
        "malformed_mid",
        LLMStreamError,
        False,
        "mid",
        _same(malformed_after=MID),
        streamed_only=True,
    ),
    Fault(
        "stream_error_coded_before",
        LLMResponseError,
        True,
        "before",
        _same(error_after=0, stream_error_code=500),
        streamed_only=True,
        status=500,
        dialects=CODED,
    ),
    Fault(
        "stream_error_coded_mid",
        LLMResponseError,
        True,
        "mid",
        _same(error_after=MID, stream_error_code=500),
        streamed_only=True,
        status=500,
        dialects=CODED,
    ),
    Fault(
        "stream_error_400_before",
        LLMResponseError,
        False,
        "before",
        _same(error_after=0, stream_error_code=400),
        streamed_only=True,
        status=400,
        dialects=CODED,
    ),
    Fault(
        "stream_error_uncoded_before",
        LLMResponseError,
        False,
        "before",
        _same(error_after=0),
        streamed_only=True,
        dialects=UNCODED,
    ),
    Fault(
        "stream_error_uncoded_mid",
        LLMResponseError,
        False,
        "mid",
        _same(error_after=MID),
        streamed_only=True,
        dialects=UNCODED,
    ),
    Fault(
        "stream_error_lost_before",
        LLMStreamError,
        False,
        "before",
        _same(error_after=0),
        streamed_only=True,
        dialects=LOST,
        leaks_chunk=True,
    ),
    Fault(
        "stream_error_lost_mid",
        LLMStreamError,
        False,
        "mid",
        _same(error_after=MID),
        streamed_only=True,
        dialects=LOST,
    ),
    Fault(
        "truncated_before",
        LLMStreamError,
        False,
        "before",
        _same(truncate_after=0),
        streamed_only=True,
    ),
    Fault(
        "truncated_mid",
        LLMStreamError,
        False,
        "mid",
        _same(truncate_after=MID),
        streamed_only=True,
    ),
    Fault("oversized", LLMStreamError, False, "before", _oversized),
    Fault(
        "invalid_utf8_before",
        LLMStreamError,
        False,
        "before",
        _same(invalid_utf8_after=0),
        streamed_only=True,
    ),
    Fault(
        "invalid_utf8_mid",
        LLMStreamError,
        False,
        "mid",
        _same(invalid_utf8_after=MID),
        streamed_only=True,
    ),
    Fault(
        "html_200",
        LLMResponseError,
        False,
        "before",
        _same(raw_body=b"<html><body>It works!</body></html>", content_type="text/html"),
        status=200,
    ),
    Fault("wrong_content_type", LLMResponseError, False, "before", _wrong_type_body, status=200),
    Fault("cut_before", LLMConnectionError, True, "before", _same(cut_mid_chunk_after=0)),
    Fault(
        "cut_mid",
        LLMConnectionError,
        True,
        "mid",
        _same(cut_mid_chunk_after=MID),
        streamed_only=True,
    ),
)
FAULTS_BY_NAME = {fault.name: fault for fault in FAULTS}


@dataclass(frozen=True)
class Outcome:
    """What a cell must end with.

    Attributes:
        kind: ``"ok"`` (the whole answer), ``"raise"`` (``error``, with nothing delivered)
            or ``"interrupted"`` (``LLMStreamInterrupted`` whose ``__cause__`` is an
            ``error``).
        error: The exact error type (of the cause, for ``"interrupted"``).
        attempts: Attempts made: 1 plus the retries.
        resent: Requests sent once more on a fresh connection (rule 5), beyond ``attempts``.
    """

    kind: Literal["ok", "raise", "interrupted"]
    error: type[Exception] | None = None
    attempts: int = 1
    resent: int = 0


def expected(fault: Fault, path: Path) -> Outcome | None:
    """The outcome the rules give for ``fault`` on a chat ``path`` of one ``LLMClient``
    (``None``: the fault cannot occur on that path)."""
    if path == "chat_whole" and fault.streamed_only:
        return None
    if fault.kept_alive:  # rule 5, and the fresh connection gets the good answer
        return Outcome("ok", attempts=1, resent=1)
    retries = 0 if path == "stream_chat" else MAX_RETRIES
    reached = path in EXPOSED_PATHS and (
        fault.at == "mid" or (fault.leaks_chunk and path in CHUNK_PATHS)
    )
    if reached:  # rule 2
        return Outcome("interrupted", fault.error)
    if fault.persistent:  # rule 1, every attempt failing
        return Outcome("raise", fault.error, 1 + (retries if fault.retryable else 0))
    if fault.retryable and retries:  # rules 1 and 3
        return Outcome("ok", attempts=2)
    return Outcome("raise", fault.error)  # rule 4, or no retries on this path


def router_expected(fault: Fault, path: Path) -> Outcome | None:
    """The outcome for a router over a faulty endpoint A and a healthy endpoint B, with
    ``strategy="failover"`` (A first).

    The client's rules hold across endpoints, and a retry goes to an endpoint not yet tried
    (B). A down endpoint is found by the listing read before the first request and never
    tried, so every path, ``stream_chat`` included, is served by B at the first attempt. That
    listing read leaves a kept-alive connection to A, which the first chat request uses: a
    reset before the headers meets it (rule 5).
    """
    if fault.persistent:
        return Outcome("ok", attempts=1)
    if fault.name == "reset_before_headers":
        return expected(FAULTS_BY_NAME["reset_before_headers_kept_alive"], path)
    return expected(fault, path)


#: Faults as a raw HTTP server gives them to preflight's GETs, with what preflight raises.
#: Preflight retries nothing: it reports the server's state.
PREFLIGHT_FAULTS: dict[str, Outcome] = {
    "refused": Outcome("raise", LLMConnectionError),
    "reset_before_headers": Outcome("raise", LLMConnectionError),
    "stall_before_headers": Outcome("raise", LLMTimeoutError),
    "truncated_before": Outcome("raise", LLMConnectionError),
    "cut_before": Outcome("raise", LLMConnectionError),
    "malformed_before": Outcome("raise", LLMResponseError),
    "html_200": Outcome("raise", LLMResponseError),
    **{
        fault.name: Outcome("raise", fault.error)
        for fault in FAULTS
        if fault.name.startswith("status_")
    },
}


def _table() -> dict[tuple[str, str], Outcome]:
    table: dict[tuple[str, str], Outcome] = {}
    for fault in FAULTS:
        for path in CHAT_PATHS:
            outcome = expected(fault, path)
            if outcome is not None:
                table[fault.name, path] = outcome
    for name, outcome in PREFLIGHT_FAULTS.items():
        table[name, "preflight_check"] = outcome
    return table


#: (fault, path) → expected outcome, for one ``LLMClient``.
EXPECTED: dict[tuple[str, str], Outcome] = _table()
#: (fault, path) → expected outcome, for a ``Router`` whose first endpoint has the fault.
ROUTER_EXPECTED: dict[tuple[str, str], Outcome] = {
    (fault.name, path): outcome
    for fault in FAULTS
    for path in CHAT_PATHS
    if (outcome := router_expected(fault, path)) is not None
}


@dataclass
class Delivered:
    """What reached the caller of one call."""

    pieces: list[str] = field(default_factory=list)
    chunks: int = 0

    @property
    def text(self) -> str:
        return "".join(self.pieces)


def words_before_mid(dialect: str) -> str:
    """The text a caller holds when a mid-stream fault fires (``MID`` chunks were sent)."""
    words = MID - 1 if DIALECTS[dialect].role_chunk else MID
    return "".join(WORDS[:words])


#: Cells llmtap gets wrong today, (fault, path) → what happens instead of the rule. Their
#: tests are marked ``xfail(strict=True)``, so a fix turns them into failures to unmark.
KNOWN_BUGS: dict[tuple[str, str], str] = {}
