"""Every error llmtap raises, as one tree.

::

    LLMError                       server trouble of any kind; carries method, url, request_id
    ├── LLMConnectionError         the endpoint could not be reached, or the connection broke
    │   └── LLMTimeoutError        a deadline passed: .deadline ("connect", "first_token",
    │                              "idle", "total", "preflight") and .timeout (seconds)
    ├── LLMResponseError           the server answered with an error: .status_code,
    │   │                          .server_message, .error_type, .error_code, .retry_after
    │   ├── LLMRateLimitError      status 429
    │   └── LLMModelError          the server has no such model, or several and none was
    │                              chosen: .model, .available
    ├── LLMStreamError             the answer stream was malformed or ended without its end
    │   └── LLMStreamInterrupted   the stream broke after output reached the caller:
    │                              .partial_text, .chunks_received; __cause__ is the failure
    ├── LLMToolLoopError           run_tools() used up max_rounds and the model still called
    │                              tools: .messages (the transcript so far)
    ├── LLMParseError              parse() got no reply that validates as the wanted type:
    │                              .raw_text (the last reply), .errors (pydantic's errors)
    └── LLMRouterBusyError         Router: every endpoint that serves the model stayed at its
                                   max_concurrency for the whole queue_timeout

    LLMUsageError (RuntimeError)   the library was used wrongly (a stream iterated twice, a
                                   closed client used); a bug in the caller, not server trouble
    ConfigFileError (ValueError)   a config file that cannot be used: .path, .key
    BatchFileError (ValueError)    a batch's input or output file that cannot be used
                                   (duplicate custom_ids, output there without resume): .path
    StoreError (ValueError)        the conversation log's or the cache's database cannot be
                                   used (not a database, written by a newer llmtap): .path

Messages say what happened and what to do. None of them, nor any repr, contains an API key:
the key only ever travels in a request header, and URLs are shown without their userinfo.
Whatever a server sends, an error's ``str()`` and ``repr()`` stay under 4 KiB: the message is
cut at 2 KiB and the URL at 1 KiB (the server's own words are on ``server_message``, cut at
2 KiB too).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

if TYPE_CHECKING:
    from pydantic_core import ErrorDetails

__all__ = [
    "MAX_SERVER_MESSAGE",
    "BatchFileError",
    "ConfigFileError",
    "LLMConnectionError",
    "LLMError",
    "LLMModelError",
    "LLMParseError",
    "LLMRateLimitError",
    "LLMResponseError",
    "LLMRouterBusyError",
    "LLMStreamError",
    "LLMStreamInterrupted",
    "LLMTimeoutError",
    "LLMToolLoopError",
    "LLMUsageError",
    "StoreError",
    "bounded",
    "redact_url",
    "register_secret",
    "scrub",
]

#: Longest server message kept on an error, in characters.
MAX_SERVER_MESSAGE = 2048
#: Most bytes (UTF-8) of an error's message, and of the URL and request id shown with it.
_MAX_MESSAGE_BYTES = 2048
_MAX_URL_BYTES = 1024
_MAX_ID_BYTES = 128

#: The API keys of the clients made in this process: masked wherever they would show.
_SECRETS: set[str] = set()
_PASSWORD_IN_URL = re.compile(r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^/\s:@]*):[^@\s/]*@")


def register_secret(value: str) -> None:
    """Remember ``value`` (an API key) so that :func:`scrub` masks it from now on."""
    if len(value) >= 8:  # masking a short string would garble ordinary text
        _SECRETS.add(value)


def scrub(text: str) -> str:
    """``text`` with URL passwords and known API keys replaced by ``***``.

    Applied to every error message and log field: a server that echoes the key in its error,
    or an endpoint URL with a password in it, must not carry the secret into a traceback.
    """
    if "@" in text:
        text = _PASSWORD_IN_URL.sub(r"\g<head>:***@", text)
    for secret in _SECRETS:
        if secret in text:
            text = text.replace(secret, "***")
    return text


def bounded(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` bytes of UTF-8 (on a character boundary), with an
    ellipsis and the number of characters left out when it was cut."""
    if len(text) * 4 <= limit or len(text.encode("utf-8")) <= limit:
        return text
    kept = text.encode("utf-8")[: limit - 40].decode("utf-8", errors="ignore")
    return f"{kept}… [{len(text) - len(kept)} more characters]"


def redact_url(url: str) -> str:
    """Return ``url`` without a password in its userinfo part."""
    if "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable url>"
    if parts.password is None and parts.username is None:
        return url
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    user = f"{parts.username}:***@" if parts.password is not None else f"{parts.username}@"
    return urlunsplit((parts.scheme, user + host, parts.path, parts.query, parts.fragment))


class LLMError(Exception):
    """Base class of every error llmtap raises for server or network trouble.

    Attributes:
        message: What happened and what to do about it.
        method: HTTP method of the request that failed, if a request was made.
        url: URL of that request (userinfo redacted).
        request_id: The server's request id (``x-request-id`` and similar), when it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        message = bounded(scrub(message), _MAX_MESSAGE_BYTES)
        super().__init__(message)
        self.message = message
        self.method = method
        self.url = redact_url(url) if url is not None else None
        self.request_id = request_id

    def __str__(self) -> str:
        text = self.message
        if self.method and self.url:
            text = f"{text} [{bounded(self.method, 32)} {bounded(self.url, _MAX_URL_BYTES)}]"
        if self.request_id:
            text = f"{text} (request id {bounded(self.request_id, _MAX_ID_BYTES)})"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"

    def __reduce__(self) -> tuple[object, ...]:
        # Keyword-only constructors do not survive pickling by default.
        return (_rebuild, (type(self), self.__dict__))


def _rebuild(cls: type[LLMError], state: dict[str, object]) -> LLMError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class LLMConnectionError(LLMError):
    """The endpoint could not be reached, or the connection broke while talking to it."""


class LLMTimeoutError(LLMConnectionError):
    """A deadline passed.

    Attributes:
        deadline: Which one: ``"connect"``, ``"first_token"``, ``"idle"``, ``"total"`` or
            ``"preflight"``.
        timeout: Its value in seconds.
    """

    def __init__(
        self,
        message: str,
        *,
        deadline: str,
        timeout: float,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url, request_id=request_id)
        self.deadline = deadline
        self.timeout = timeout


class LLMResponseError(LLMError):
    """The server answered with an error, as an HTTP status or as an error object in the stream.

    Attributes:
        status_code: HTTP status, or the numeric ``code`` of an in-stream error object; ``None``
            when the server gave no number.
        server_message: What the server said, parsed from its JSON body (at most 2 KiB).
        error_type: The body's ``type`` field (``"invalid_request_error"``, ...), if any.
        error_code: The body's ``code`` field when it is a string (``"insufficient_quota"``, ...).
        retry_after: Seconds the server asked to wait before retrying, if it said.
        should_retry: The server's ``x-should-retry`` header (``True``/``False``), which
            overrides the status rule; ``None`` when it sent none.
    """

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        server_message: str | None = None,
        error_type: str | None = None,
        error_code: str | None = None,
        retry_after: float | None = None,
        should_retry: bool | None = None,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url, request_id=request_id)
        self.status_code = status_code
        self.should_retry = should_retry
        if server_message is not None:
            server_message = scrub(server_message)
            if len(server_message) > MAX_SERVER_MESSAGE:
                server_message = server_message[:MAX_SERVER_MESSAGE] + "…"
        self.server_message = server_message
        self.error_type = error_type
        self.error_code = error_code
        self.retry_after = retry_after

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r}, status_code={self.status_code!r})"


class LLMRateLimitError(LLMResponseError):
    """The server refused the request with status 429 (rate limit or exhausted quota)."""


class LLMModelError(LLMResponseError):
    """The server does not have the model asked for, or has several and none was chosen.

    The server's state caused it, not the code: pick a listed model (``LLMConfig(model=...)``,
    ``LLMTAP_MODEL``), or get the model onto the server (``ollama pull``).

    Attributes:
        model: The model asked for (``""`` when none was set).
        available: The models the server listed.
    """

    def __init__(
        self,
        message: str,
        status_code: int | None = None,
        *,
        model: str = "",
        available: Sequence[str] = (),
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, status_code, method=method, url=url, request_id=request_id)
        self.model = model
        self.available = tuple(available)


class LLMStreamError(LLMError):
    """The answer stream was malformed (a chunk that is not JSON, a line over the size limit)
    or ended without its terminator before any output reached the caller."""


class LLMStreamInterrupted(LLMStreamError):
    """The stream broke after part of the answer had reached the caller.

    Nothing is retried at that point, because a retry would repeat what the caller already has.
    ``__cause__`` is the underlying failure (an ``LLMConnectionError``, ``LLMTimeoutError``,
    ``LLMResponseError`` or ``LLMStreamError``).

    Attributes:
        partial_text: The text content delivered before the failure.
        chunks_received: How many chunks reached the caller.
    """

    def __init__(
        self,
        message: str,
        *,
        partial_text: str,
        chunks_received: int,
        method: str | None = None,
        url: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(message, method=method, url=url, request_id=request_id)
        self.partial_text = partial_text
        self.chunks_received = chunks_received

    @classmethod
    def after(cls, error: LLMError, partial_text: str, delivered: int) -> LLMStreamInterrupted:
        """The error for a stream that broke with ``error`` after ``delivered`` chunks (or
        events) reached the caller; raise it ``from error``."""
        chunks, them = ("chunk", "it") if delivered == 1 else ("chunks", "them")
        return cls(
            f"The stream broke after {delivered} {chunks} had been delivered; not retried, to "
            f"avoid repeating {them}. Cause: {error.message}",
            partial_text=partial_text,
            chunks_received=delivered,
            method=error.method,
            url=error.url,
            request_id=error.request_id,
        )


class LLMUsageError(RuntimeError):
    """The library was used wrongly: a stream iterated twice, a closed client reused."""


class LLMRouterBusyError(LLMError):
    """Every endpoint that serves the model stayed at its ``max_concurrency`` for the whole
    ``queue_timeout``: the router is saturated. Raise either limit, or add endpoints."""


class ConfigFileError(ValueError):
    """A config file that cannot be used: missing, not TOML, an unknown key or a bad value.

    Attributes:
        path: The file.
        key: The offending key (``"endpoints[1].model"`` for a table), when one is to blame.
    """

    def __init__(self, message: str, *, path: Path, key: str | None = None) -> None:
        super().__init__(scrub(message))
        self.path = path
        self.key = key


class LLMToolLoopError(LLMError):
    """:meth:`LLMClient.run_tools` used up ``max_rounds`` and the model was still calling tools.

    Every call of the last round was answered, so ``run_tools(error.messages, ...)`` carries on
    where the loop stopped.

    Attributes:
        messages: The transcript: the caller's messages, then each round's assistant message
            and its ``tool`` messages.
    """

    def __init__(self, message: str, *, messages: Sequence[Any]) -> None:
        super().__init__(message)
        self.messages = list(messages)


class LLMParseError(LLMError):
    """:meth:`LLMClient.parse` got no reply that validates as the wanted type, repairs included.

    Attributes:
        raw_text: The last reply's text, as the model sent it.
        errors: Pydantic's validation errors for that reply (``ValidationError.errors()``).
    """

    def __init__(self, message: str, *, raw_text: str, errors: Sequence[ErrorDetails]) -> None:
        super().__init__(message)
        self.raw_text = raw_text
        self.errors = list(errors)


class BatchFileError(ValueError):
    """A batch's input or output file that cannot be used, found before anything is sent:
    duplicate ``custom_id``s (the message names their lines), an output file that exists
    when ``resume`` was not asked for, a file that cannot be read or written.

    Attributes:
        path: The file.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(scrub(message))
        self.path = path


class StoreError(ValueError):
    """The conversation log's or the response cache's SQLite database cannot be used: its
    folder cannot be made, the file is not a database, or a newer llmtap wrote it.

    Attributes:
        path: The database file.
    """

    def __init__(self, message: str, *, path: Path) -> None:
        super().__init__(scrub(message))
        self.path = path
