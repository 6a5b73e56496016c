"""The retry policy: which errors are retried, how long to wait."""

from __future__ import annotations

from email.utils import formatdate

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtap import (
    LLMConnectionError,
    LLMRateLimitError,
    LLMResponseError,
    LLMStreamError,
    LLMTimeoutError,
)
from llmtap._retry import backoff, is_retryable, parse_retry_after, should_retry_header


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    """408, 409, 429 and the 5xx family (DEFECTS.md item 2) are retried."""
    assert is_retryable(LLMResponseError("x", status)) is True


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 501])
def test_other_statuses_are_not_retried(status: int) -> None:
    """Other 4xx (and 501) raise at once."""
    assert is_retryable(LLMResponseError("x", status)) is False


def test_exhausted_quota_is_not_retried() -> None:
    """A 429 that says the quota is gone will not get better by waiting."""
    error = LLMRateLimitError("x", 429, error_code="insufficient_quota")
    assert is_retryable(error) is False


def test_x_should_retry_overrides_status() -> None:
    """x-should-retry: false stops a 503 retry; true makes a 400 retried."""
    assert is_retryable(LLMResponseError("x", 503, should_retry=False)) is False
    assert is_retryable(LLMResponseError("x", 400, should_retry=True)) is True


def test_connection_errors_and_timeouts_are_retried_stream_errors_not() -> None:
    """Connection trouble is transient; a malformed stream is not."""
    assert is_retryable(LLMConnectionError("x")) is True
    assert is_retryable(LLMTimeoutError("x", deadline="first_token", timeout=1.0)) is True
    assert is_retryable(LLMStreamError("x")) is False


def test_in_stream_error_without_code_is_not_retried() -> None:
    """An error object with no numeric code gives no reason to expect a retry to help."""
    assert is_retryable(LLMResponseError("x", None)) is False


def test_retry_after_seconds_ms_and_date() -> None:
    """retry-after-ms wins over Retry-After; seconds and HTTP dates are both read."""
    assert parse_retry_after({"Retry-After": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250", "Retry-After": "3"}) == 0.25
    now = 1_700_000_000.0
    assert parse_retry_after({"Retry-After": formatdate(now + 30, usegmt=True)}, now=now) == 30.0
    assert parse_retry_after({"Retry-After": formatdate(now - 30, usegmt=True)}, now=now) == 0.0
    assert parse_retry_after({"Retry-After": "soon"}) is None
    assert parse_retry_after({}) is None


def test_should_retry_header_values() -> None:
    """Only the literal values true/false count."""
    assert should_retry_header({"X-Should-Retry": "true"}) is True
    assert should_retry_header({"x-should-retry": "false"}) is False
    assert should_retry_header({"x-should-retry": "maybe"}) is None
    assert should_retry_header({}) is None


@given(
    attempt=st.integers(min_value=0, max_value=60),
    base=st.floats(min_value=0, max_value=10),
    cap=st.floats(min_value=0, max_value=100),
)
def test_backoff_is_full_jitter_within_the_cap(attempt: int, base: float, cap: float) -> None:
    """Backoff lies in [0, min(cap, base * 2**attempt)], whatever the attempt."""
    wait = backoff(attempt, base, cap)
    assert 0.0 <= wait <= min(cap, base * 2.0**attempt)
