"""What a failure is called: the one mapping from an HTTP status (or an error object a server
sent) to an :class:`~llmtap.LLMResponseError`, and from a low-level exception to the most
specific :class:`~llmtap.LLMError`.

Every status llmtap meets, on a chat request, a listing, a probe or inside a stream, becomes
an error here and nowhere else, so that a 401 reads the same wherever it came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import aiohttp

from llmtap import _retry
from llmtap._config import LLMConfig
from llmtap._errors import (
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMTimeoutError,
)
from llmtap._wire.dialects import ErrorInfo

__all__ = [
    "Route",
    "request_id_of",
    "response_error",
    "timeout_error",
    "transport_error",
    "transport_errors",
]

#: Where the status came from: a chat (or embeddings) request, a listing or probe route
#: (``/v1/models``, ``/api/tags``, ...), or an error object inside a 200 answer.
Route = Literal["request", "listing", "stream"]

_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid")
_DEADLINE_TEXT = {
    "first_token": "No answer arrived within first_token_timeout",
    "idle": "The server went silent for longer than idle_timeout",
    "total": "The request took longer than total_timeout",
    "preflight": "No complete answer arrived within preflight_timeout",
}
_NO_HEADERS: Mapping[str, str] = {}


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The server's request id, from whichever header it uses."""
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def response_error(
    status: int | None,
    info: ErrorInfo | None,
    *,
    method: str,
    url: str,
    endpoint: str = "",
    route: Route = "request",
    headers: Mapping[str, str] = _NO_HEADERS,
    reason: str | None = None,
) -> LLMResponseError:
    """The error for a server's refusal: ``status`` (the HTTP status, or an in-stream error
    object's numeric code), what its body said (``info``), and what it says to do.

    Args:
        status: The status; ``None`` when an in-stream error gave no number.
        info: The parsed error body (``None``: no body, or not one that could be read).
        method: The request's method.
        url: The request's URL.
        endpoint: The configured endpoint, named in the messages of listing routes.
        route: Where the status came from (see :data:`Route`).
        headers: The response's headers (``Retry-After``, ``x-should-retry``, request id).
        reason: The status line's reason phrase, used when the body said nothing.
    """
    said = (info.message if info is not None else "") or reason or ""
    colon = f": {said}" if said else ""
    if route == "stream":
        message = f"The server reported an error mid-stream: {said}"
    elif status is not None and 300 <= status < 400:
        message = (
            f"The server redirected to {headers.get('Location', '(no Location header)')}; "
            "llmtap does not follow redirects (they could carry the API key to another "
            "host). Set endpoint to the new URL"
        )
    elif status in (401, 403):
        message = (
            f"The server refused the credentials ({status}{colon}). "
            "Set LLMTAP_API_KEY (or api_key=) to a valid key"
        )
    elif status == 429:
        message = f"The server is rate-limiting requests (429){colon}"
    elif route == "listing" and status == 404:
        message = (
            f"No LLM API at {endpoint}: {url} answered 404. Check the port and path (Ollama "
            "listens on 11434, llama.cpp on 8080, vLLM on 8000; an OpenAI-style endpoint may "
            "need a /v1 suffix)"
        )
    elif route == "listing" and status == 503:
        loading = "loading" in said.lower()
        message = (
            f"The server at {endpoint} is loading its model; it is not down. "
            "Try again in a few seconds"
            if loading
            else f"The server at {endpoint} is unavailable (503{colon}); try again shortly"
        )
    elif route == "listing" and status is not None and status >= 500:
        message = (
            f"{url} answered {status}{colon}: the server is failing or still loading its model"
        )
    elif route == "listing" and status == 200:
        message = f"The server answered with an error: {said}"
    elif status == 404:
        message = f"Not found (404): {said}"
    else:
        message = f"The server answered {status}{colon}"
    if route == "request" and url.rstrip("/").endswith("/responses"):
        message += _responses_hint(status, said, url)
    cls = LLMRateLimitError if status == 429 else LLMResponseError
    return cls(
        message,
        status,
        server_message=said if route != "listing" or info is not None else None,
        error_type=info.type if info is not None else None,
        error_code=info.code if info is not None else None,
        retry_after=_retry.parse_retry_after(headers),
        should_retry=_retry.should_retry_header(headers),
        method=method,
        url=url,
        request_id=request_id_of(headers),
    )


def _responses_hint(status: int | None, said: str, url: str) -> str:
    """What to do about a refused Responses API request: a server that keeps no responses
    (llama-server's 400 for ``previous_response_id``; vLLM's 404 for an id it never stored,
    as its store is off by default), or one with no Responses API at all (a 404 that names
    no model nor response: llama-cpp-python, older Ollama)."""
    lowered = said.lower()
    if "previous_response_id" in lowered or (status == 404 and "response with id" in lowered):
        return (
            ". This server keeps no earlier responses (vLLM keeps them only when started with "
            "VLLM_ENABLE_RESPONSES_API_STORE=1; llama-server never does), or no longer this "
            "one: send the whole conversation instead of previous_response_id"
        )
    if status in (404, 405) and "model" not in lowered:
        return (
            f". {url} has no Responses API (the server is older or does not offer it): use "
            "chat completions, api='openai' (llmtap chat --api openai)"
        )
    return ""


def timeout_error(
    deadline: str, timeout: float, method: str, url: str, hint: str = ""
) -> LLMTimeoutError:
    """The error for a passed deadline, saying which and its value."""
    hint = hint or "raise it if the model is slow to load or to answer"
    return LLMTimeoutError(
        f"{_DEADLINE_TEXT[deadline]} ({timeout:g} s); {hint}",
        deadline=deadline,
        timeout=timeout,
        method=method,
        url=url,
    )


def transport_errors(*also: type[BaseException]) -> tuple[type[BaseException], ...]:
    """The low-level exceptions a request or read can raise, aiohttp's and the OS's, and
    ``also``."""
    return (aiohttp.ClientError, OSError, *also)


def transport_error(
    exc: BaseException, config: LLMConfig, method: str, url: str, *, reading: bool
) -> LLMError:
    """The most specific :class:`LLMError` for a low-level failure.

    Args:
        exc: What aiohttp or the OS raised.
        config: For the endpoint and deadline values named in the message.
        method: The request's method.
        url: The request's URL.
        reading: Whether the response headers had arrived (the body was being read).
    """
    if isinstance(exc, LLMError):
        return exc
    if isinstance(exc, aiohttp.SocketTimeoutError):  # a socket read timeout: server silence
        return timeout_error("idle", config.idle_timeout, method, url)
    if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ServerTimeoutError):
        return LLMTimeoutError(
            f"Could not connect within connect_timeout ({config.connect_timeout:g} s); "
            "check that the host is reachable",
            deadline="connect",
            timeout=config.connect_timeout,
            method=method,
            url=url,
        )
    if isinstance(exc, aiohttp.ClientConnectorCertificateError | aiohttp.ClientSSLError):
        return LLMConnectionError(
            f"TLS failed for {config.endpoint}: {exc}. Pass verify='<CA bundle>' for a "
            "private certificate authority",
            method=method,
            url=url,
        )
    if isinstance(exc, aiohttp.ClientConnectorError):
        return LLMConnectionError(
            f"Cannot reach {config.endpoint} ({exc.os_error.strerror or exc}). Is the server "
            "running? For Ollama run `ollama serve`; a vLLM server refuses connections until "
            "its model has loaded",
            method=method,
            url=url,
        )
    what = (
        "The connection broke while reading the answer"
        if reading
        else "The server closed the connection before answering"
    )
    return LLMConnectionError(
        f"{what}: {type(exc).__name__}: {exc}".rstrip(": "), method=method, url=url
    )
