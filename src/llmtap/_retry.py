"""Retry policy: what may be retried, how long to wait first, and whose fault a failure is.
No I/O here.

:func:`decide` is the one place where llmtap decides whether a failed attempt is tried again
(retried, refitted, resumed, restarted or moved to another server) or raised: every call path,
streaming or not, one client or a router, asks it. The rule that matters most is there: once
output has reached the caller, nothing is tried again from the start, because the caller would
see the same tokens twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Literal

from llmtap._errors import LLMConnectionError, LLMError, LLMResponseError

__all__ = [
    "MAX_RETRY_AFTER",
    "REQUEST_FAULT_WORDS",
    "RETRYABLE_STATUSES",
    "Output",
    "Verdict",
    "backoff",
    "counts_against",
    "decide",
    "is_request_fault",
    "is_retryable",
    "model_gone",
    "parse_retry_after",
    "should_retry_header",
    "waits_disabled",
    "waits_enabled",
]

#: Statuses worth another try: timeout, conflict, rate limit, and the server-side family.
RETRYABLE_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})

#: The longest server-requested wait honoured, in seconds; a longer one is raised instead.
MAX_RETRY_AFTER = 120.0

_QUOTA_CODES = frozenset({"insufficient_quota"})


class _Switch:
    waits_enabled = True


@contextmanager
def waits_disabled() -> Iterator[None]:
    """Within this block, retries happen without waiting (for tests)."""
    previous = _Switch.waits_enabled
    _Switch.waits_enabled = False
    try:
        yield
    finally:
        _Switch.waits_enabled = previous


def waits_enabled() -> bool:
    """Whether retry waits are on (see :func:`waits_disabled`)."""
    return _Switch.waits_enabled


def parse_retry_after(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds the server asked to wait: ``retry-after-ms``, else ``Retry-After`` as seconds or
    an HTTP date. ``None`` when absent or unreadable; never negative."""
    lowered = {key.lower(): value for key, value in headers.items()}
    if (raw := lowered.get("retry-after-ms")) is not None:
        try:
            return max(float(raw) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = lowered.get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def should_retry_header(headers: Mapping[str, str]) -> bool | None:
    """The ``x-should-retry`` override: ``True``/``False``, or ``None`` when absent."""
    for key, value in headers.items():
        if key.lower() == "x-should-retry":
            if value.strip().lower() == "true":
                return True
            if value.strip().lower() == "false":
                return False
    return None


#: Words that, in a 500's message, name something in the request: the server is telling the
#: caller that this request cannot be served (llama-server: "image input is not supported";
#: llama-cpp-python: "1 validation error ... response_format"; "request (723 tokens) exceeds
#: the available context size"), not that it is in trouble.
REQUEST_FAULT_WORDS = (
    "not supported",
    "unsupported",
    "does not support",
    "invalid",
    "validation error",
    "exceeds",
    "too long",
    "must be",
    "is required",
    "missing required",
    "does not match",
    "failed to parse",
    "unrecognized",
    "not allowed",
)


def is_request_fault(error: LLMError) -> bool:
    """Whether ``error`` is the server saying this request cannot be served: a 4xx status
    other than 408, 409 and 429, or a 500 whose message names something in the request (one
    of :data:`REQUEST_FAULT_WORDS`). Such a failure is the request's fault: another try, on
    this server or another, would get the same answer, and it says nothing about the server's
    health."""
    if not isinstance(error, LLMResponseError) or error.status_code is None:
        return False
    status = error.status_code
    if 400 <= status < 500:
        return status not in (408, 409, 429)
    if status != 500:
        return False
    said = (error.server_message or "").lower()
    return any(word in said for word in REQUEST_FAULT_WORDS)


def is_retryable(error: LLMError) -> bool:
    """Whether ``error``, raised before any output reached the caller, is worth another try.

    Connection failures and timeouts are; so are statuses in :data:`RETRYABLE_STATUSES`
    (unless the server's ``x-should-retry`` header said otherwise, a 429 says the quota is
    exhausted, or a 500 names the request, see :func:`is_request_fault`). Malformed streams
    and other statuses are not.
    """
    if isinstance(error, LLMConnectionError):
        return True
    if not isinstance(error, LLMResponseError):
        return False
    if error.should_retry is not None:
        return error.should_retry
    if error.status_code not in RETRYABLE_STATUSES or is_request_fault(error):
        return False
    return not (error.status_code == 429 and (error.error_code or error.error_type) in _QUOTA_CODES)


def counts_against(error: LLMError) -> bool:
    """Whether a failure says the server itself is in trouble: it could not be reached, the
    connection broke or timed out, or it answered with a 5xx status that does not name the
    request (see :func:`is_request_fault`). A router takes such a server out for a while."""
    if isinstance(error, LLMConnectionError):
        return True
    return (
        isinstance(error, LLMResponseError)
        and error.status_code is not None
        and error.status_code >= 500
        and not is_request_fault(error)
    )


def model_gone(error: LLMError) -> bool:
    """Whether ``error`` is a server saying it does not have the requested model (its listing
    was out of date): another server may still have it."""
    return (
        isinstance(error, LLMResponseError)
        and error.status_code == 404
        and "model" in (error.server_message or error.error_code or "").lower()
    )


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``."""
    return random.uniform(0.0, min(cap, base * (2.0**attempt)))


#: Whether output reached anyone before a failure: ``"none"``; ``"hidden"``, delivered to
#: llmtap only (``chat()`` accumulates it; the caller has seen nothing); ``"shown"``, delivered
#: to the caller.
Output = Literal["none", "hidden", "shown"]


@dataclass(frozen=True, slots=True)
class Verdict:
    """What :func:`decide` decided about a failed attempt.

    Attributes:
        action: ``"raise"``; ``"refit"`` (send the request again at once, changed the way the
            server asked; not counted as a retry); ``"retry"`` (before any output);
            ``"restart"`` (output reached only llmtap: start the answer over, as new);
            ``"resume"`` (continue the partial answer where it broke).
        wait: Seconds to wait before the next attempt.
        reason: Why it is raised (``""`` otherwise), for logs and hooks.
    """

    action: Literal["raise", "refit", "retry", "restart", "resume"]
    wait: float = 0.0
    reason: str = ""

    @property
    def again(self) -> bool:
        """Whether another attempt follows."""
        return self.action != "raise"


def decide(
    error: LLMError,
    *,
    retries: int,
    max_retries: int,
    output: Output = "none",
    can_refit: bool = False,
    can_resume: bool = False,
    elsewhere: bool = False,
    now: float,
    deadline: float,
    backoff_base: float,
    backoff_max: float,
    budget: Callable[[], bool] | None = None,
) -> Verdict:
    """Whether the attempt that failed with ``error`` is tried again, how, and after how long.

    Args:
        error: What the attempt raised.
        retries: Attempts made after the first so far (refits not counted).
        max_retries: The most such attempts allowed.
        output: What output the failed attempt had delivered (see :data:`Output`).
        can_refit: The request can be changed so that the server takes it (see
            ``llmtap._wire.request.REFITS``).
        can_resume: Resuming was asked for and is possible: text was delivered, no tool call
            had begun, and the server is one that continues a partial answer.
        elsewhere: Another server, not tried yet, can take the next attempt (a router): a
            model it lacks is then worth a try there, and there is no reason to wait.
        now: The current loop time.
        deadline: The loop time by which the whole call must end.
        backoff_base: The first backoff, in seconds (doubling per retry, full jitter)...
        backoff_max: ...up to this.
        budget: Takes one retry from a router's retry budget; ``False`` when none is left.
            Asked last, so that a retry that would be refused anyway takes nothing.

    Returns:
        The verdict. Order of the rules: a refit needs no output and is always allowed; after
        output shown to the caller only a resume may follow; a resume needs a failure that is
        not the server refusing the request, anything else a retryable failure (or, with
        ``elsewhere``, a server without the model); then retries left, a server-requested wait
        of at most :data:`MAX_RETRY_AFTER`, the deadline, and the budget.
    """
    if output == "none" and can_refit:
        return Verdict("refit")
    if output == "shown" and not can_resume:
        return Verdict("raise", reason="output had reached the caller")
    resuming = output != "none" and can_resume
    if resuming:
        allowed = not (isinstance(error, LLMResponseError) and not is_retryable(error))
    else:
        allowed = is_retryable(error) or (elsewhere and model_gone(error))
    if not allowed:
        return Verdict("raise", reason="not retryable")
    if retries >= max_retries:
        return Verdict("raise", reason="retries used up")
    retry_after = error.retry_after if isinstance(error, LLMResponseError) else None
    if elsewhere or not waits_enabled():
        wait = 0.0
    elif retry_after is not None:
        if retry_after > MAX_RETRY_AFTER:
            return Verdict("raise", reason="the server asked to wait too long")
        wait = retry_after
    else:
        wait = backoff(retries, backoff_base, backoff_max)
    if now + wait >= deadline:
        return Verdict("raise", reason="total_timeout would pass")
    if budget is not None and not budget():
        return Verdict("raise", reason="the retry budget is used up")
    if resuming:
        return Verdict("resume", wait)
    return Verdict("restart" if output == "hidden" else "retry", wait)
