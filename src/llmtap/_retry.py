"""Retry policy: what may be retried, and how long to wait first. No I/O here.

The rule that matters most lives in the client, not here: once any chunk has reached the caller,
nothing is retried, because a retry would show the caller the same tokens twice.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from email.utils import parsedate_to_datetime

from llmtap._errors import LLMConnectionError, LLMError, LLMResponseError

__all__ = [
    "MAX_RETRY_AFTER",
    "RETRYABLE_STATUSES",
    "backoff",
    "is_retryable",
    "parse_retry_after",
    "should_retry_header",
    "waits_disabled",
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


def is_retryable(error: LLMError) -> bool:
    """Whether ``error``, raised before any output reached the caller, is worth another try.

    Connection failures and timeouts are; so are statuses in :data:`RETRYABLE_STATUSES`
    (unless the server's ``x-should-retry`` header said otherwise, or a 429 says the quota is
    exhausted). Malformed streams and other statuses are not.
    """
    if isinstance(error, LLMConnectionError):
        return True
    if not isinstance(error, LLMResponseError):
        return False
    if error.should_retry is not None:
        return error.should_retry
    if error.status_code not in RETRYABLE_STATUSES:
        return False
    return not (error.status_code == 429 and (error.error_code or error.error_type) in _QUOTA_CODES)


def backoff(attempt: int, base: float, cap: float) -> float:
    """Exponential backoff with full jitter: uniform in ``[0, min(cap, base * 2**attempt)]``."""
    return random.uniform(0.0, min(cap, base * (2.0**attempt)))
