"""The only module that does HTTP: requests, deadlines, stream reading, retries, preflight.

Data flows one way: response bytes → decoder (SSE or NDJSON) → chunk dicts → the caller, with the
retry loop wrapped around everything that happens before the first chunk reaches the caller.
"""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any, Self, cast

import aiohttp
import orjson

from llmtap import _retry
from llmtap._config import LLMConfig
from llmtap._dialects import (
    Dialect,
    MessageLike,
    build_payload,
    completion_to_chunk,
    parse_error_body,
    parse_error_object,
)
from llmtap._errors import (
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMTimeoutError,
    LLMUsageError,
)
from llmtap._log import get_logger
from llmtap._ndjson import NDJSONDecoder
from llmtap._preflight import (
    PreflightReport,
    ServerKind,
    canonical_ollama_name,
    match_model,
    read_model_listing,
    read_ollama_tags,
)
from llmtap._sse import SSEDecoder, SSEEvent

__all__ = ["LLMClient"]

_log = get_logger()

_USER_AGENT = "llmtap/0.1.0"
#: Most bytes of an error body read and parsed.
_MAX_ERROR_BODY = 64 * 1024
#: Most bytes read after ``[DONE]`` to let the connection go back to the pool.
_MAX_DRAIN = 64 * 1024
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid")


def _excerpt(data: bytes | str, limit: int = 200) -> str:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return repr(text if len(text) <= limit else text[:limit] + "…")


class _Watchdog:
    """Deadlines for reading a response body, at the cost of two attribute writes per read.

    One timer is armed at the earliest deadline that could pass and re-armed lazily when it
    fires early; nothing is cancelled or rescheduled per chunk. When a deadline passes, the
    pending read fails with :class:`LLMTimeoutError` and the connection is closed.
    """

    __slots__ = (
        "_first_token_at",
        "_handle",
        "_loop",
        "_method",
        "_response",
        "_url",
        "clock",
        "config",
        "got_first",
        "total_at",
        "wait_since",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        config: LLMConfig,
        response: aiohttp.ClientResponse,
        first_token_at: float,
        total_at: float,
        method: str,
        url: str,
    ) -> None:
        self._loop = loop
        self.clock = loop.time
        self.config = config
        self._response = response
        self._first_token_at = first_token_at
        self.total_at = total_at
        self._method = method
        self._url = url
        self.got_first = False
        self.wait_since: float | None = None
        self._handle = loop.call_at(min(first_token_at, total_at), self._fire)

    def _fire(self) -> None:
        now = self._loop.time()
        if now >= self.total_at:
            self._expire("total", self.config.total_timeout or 0.0)
            return
        if not self.got_first:
            if now >= self._first_token_at:
                self._expire("first_token", self.config.first_token_timeout)
                return
            when = self._first_token_at
        elif self.wait_since is not None:
            when = self.wait_since + self.config.idle_timeout
            if now >= when:
                self._expire("idle", self.config.idle_timeout)
                return
        else:  # the caller holds the stream; no read can time out before now + idle
            when = now + self.config.idle_timeout
        self._handle = self._loop.call_at(min(when, self.total_at), self._fire)

    def _expire(self, deadline: str, timeout: float) -> None:
        descriptions = {
            "first_token": "No answer arrived within first_token_timeout",
            "idle": "The server went silent for longer than idle_timeout",
            "total": "The request took longer than total_timeout",
        }
        error = LLMTimeoutError(
            f"{descriptions[deadline]} ({timeout:g} s); raise it if the model is slow to load "
            "or to answer",
            deadline=deadline,
            timeout=timeout,
            method=self._method,
            url=self._url,
        )
        self._response.content.set_exception(error)
        self._response.close()

    def cancel(self) -> None:
        self._handle.cancel()


class LLMClient:
    """Async streaming client for Ollama and every OpenAI-compatible server.

    Args:
        config: Where and how to connect; ``LLMConfig()`` (environment, then defaults) if omitted.
        **overrides: Fields of :class:`LLMConfig` to set, when ``config`` is not given.

    Example:
        >>> async def main() -> None:
        ...     async with LLMClient(LLMConfig(model="qwen3")) as client:
        ...         await client.preflight_check()
        ...         async for chunk in client.stream_chat_with_retry([Message.user("Hi")]):
        ...             print(chunk["choices"][0]["delta"].get("content") or "", end="")
    """

    def __init__(self, config: LLMConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = LLMConfig(**overrides)
        elif overrides:
            raise TypeError("pass either an LLMConfig or keyword overrides, not both")
        self._config = config
        self._model = config.model
        self._server: ServerKind | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        #: Chat URLs that answered 400 to ``stream_options``: never sent it again.
        self._no_stream_options: set[str] = set()

    def __repr__(self) -> str:
        return f"LLMClient(endpoint={self._config.endpoint!r}, model={self._model!r})"

    @property
    def config(self) -> LLMConfig:
        """The configuration this client was built with."""
        return self._config

    @property
    def model(self) -> str:
        """The model requests use (after preflight, the resolved name)."""
        return self._model

    @property
    def server(self) -> ServerKind | None:
        """The server kind found by preflight, or ``None`` before it ran."""
        return self._server

    @property
    def connections_in_use(self) -> int:
        """Connections checked out of the pool right now (0 when every stream has ended)."""
        if self._session is None:
            return 0
        acquired = getattr(self._session.connector, "_acquired", ())
        return len(acquired)

    # --- lifecycle ------------------------------------------------------------------------

    def _ssl(self) -> ssl.SSLContext | bool:
        config = self._config
        if config.verify is False:
            _log.warning(
                "tls_verification_disabled",
                endpoint=config.endpoint,
                hint="certificates are not checked; use verify=<CA bundle> instead",
            )
            return False
        if config.verify is True and config.client_cert is None:
            return True
        context = ssl.create_default_context(
            cafile=config.verify if isinstance(config.verify, str) else None
        )
        if config.client_cert is not None:
            if isinstance(config.client_cert, str):
                context.load_cert_chain(config.client_cert)
            else:
                context.load_cert_chain(*config.client_cert)
        return context

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise LLMUsageError("this LLMClient is closed; create a new one")
        if self._session is None:
            config = self._config
            headers = {"User-Agent": _USER_AGENT, **config.headers}
            if config.api_key is not None:
                headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
            connector = aiohttp.TCPConnector(
                limit=config.max_connections, limit_per_host=0, ssl=self._ssl()
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=config.connect_timeout
                ),
                auto_decompress=True,
            )
        return self._session

    async def close(self) -> None:
        """Close the connection pool. The client cannot be used afterwards."""
        self._closed = True
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- errors ---------------------------------------------------------------------------

    def _transport_error(
        self, exc: BaseException, method: str, url: str, *, reading: bool
    ) -> LLMError:
        """The most specific :class:`LLMError` for a low-level failure."""
        config = self._config
        if isinstance(exc, LLMError):
            return exc
        if isinstance(exc, aiohttp.ConnectionTimeoutError | aiohttp.ServerTimeoutError) or (
            isinstance(exc, TimeoutError) and not reading
        ):
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
        if reading:
            return LLMConnectionError(
                f"The connection broke while reading the answer: {exc.__class__.__name__}: {exc}",
                method=method,
                url=url,
            )
        return LLMConnectionError(
            f"The server closed the connection before answering: {exc.__class__.__name__}: {exc}",
            method=method,
            url=url,
        )

    async def _status_error(
        self, response: aiohttp.ClientResponse, method: str, url: str
    ) -> LLMResponseError:
        """Read (a bounded part of) an error response and describe it."""
        body = bytearray()
        try:
            while len(body) < _MAX_ERROR_BODY:
                piece = await response.content.readany()
                if not piece:
                    break
                body += piece
        except (aiohttp.ClientError, OSError, LLMError):
            pass
        finally:
            response.close()
        info = parse_error_body(bytes(body[:_MAX_ERROR_BODY]))
        status = response.status
        headers = response.headers
        retry_after = _retry.parse_retry_after(headers)
        server_message = info.message or response.reason or ""
        if 300 <= status < 400:
            location = headers.get("Location", "(no Location header)")
            message = (
                f"The server redirected to {location}; llmtap does not follow redirects "
                "(they could carry the API key to another host). Set endpoint to the new URL"
            )
        elif status in (401, 403):
            message = (
                f"The server refused the credentials ({status}: {server_message}). "
                "Set LLMTAP_API_KEY (or api_key=) to a valid key"
            )
        elif status == 404:
            message = f"Not found (404): {server_message}"
        else:
            message = f"The server answered {status}: {server_message}"
        cls = LLMRateLimitError if status == 429 else LLMResponseError
        return cls(
            message,
            status,
            server_message=server_message,
            error_type=info.type,
            error_code=info.code,
            retry_after=retry_after,
            method=method,
            url=url,
            request_id=_request_id(headers),
            should_retry=_retry.should_retry_header(headers),
        )

    @staticmethod
    def _stream_error(obj: Any, method: str, url: str, request_id: str | None) -> LLMResponseError:
        """An error object the server sent inside a 200 stream."""
        info = parse_error_object(obj)
        status = info.number
        message = f"The server reported an error mid-stream: {info.message}"
        cls = LLMRateLimitError if status == 429 else LLMResponseError
        return cls(
            message,
            status,
            server_message=info.message,
            error_type=info.type,
            error_code=info.code,
            method=method,
            url=url,
            request_id=request_id,
        )

    # --- streaming ------------------------------------------------------------------------

    def _dialect(self) -> Dialect:
        if self._config.api == "ollama" or (
            self._config.api == "auto" and self._server == "ollama"
        ):
            return "ollama"
        return "openai"

    def _chat_url(self, dialect: Dialect) -> str:
        if dialect == "ollama":
            return self._config.url_for("/api/chat")
        return self._config.chat_url

    def _payload(
        self,
        dialect: Dialect,
        messages: Iterable[MessageLike],
        tools: Sequence[Mapping[str, Any]] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
    ) -> dict[str, Any]:
        params = dict(params)
        model = params.pop("model", None) or self._model
        if not model:
            raise LLMUsageError(
                "no model is set: pass LLMConfig(model=...) or LLMTAP_MODEL, or run "
                "preflight_check() to pick the server's only model"
            )
        messages = list(messages)
        if not messages:
            raise LLMUsageError("messages is empty: send at least one message")
        config = self._config
        return build_payload(
            dialect,
            model=model,
            messages=messages,
            tools=tools,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            stream=stream,
            include_usage=self._chat_url(dialect) not in self._no_stream_options,
            params=params,
        )

    def stream_chat(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Stream one chat completion, yielding each chunk dict as the server sent it.

        No retries (see :meth:`stream_chat_with_retry`). Error objects inside the stream are
        raised, never yielded; a stream that ends without its terminator raises.

        Args:
            messages: The conversation (``Message`` objects or wire-form dicts).
            tools: OpenAI function-calling tool schemas.
            **params: Passed through into the request body (``tool_choice``, ``stop``, ``seed``,
                ``top_p``, ``response_format``, ``model``, ...).

        Raises:
            LLMConnectionError: The server could not be reached or the connection broke
                (``LLMTimeoutError`` when a deadline passed).
            LLMResponseError: The server answered with an error.
            LLMStreamError: The stream was malformed or ended without an answer.
            LLMStreamInterrupted: Any of the above after chunks reached the caller.
        """
        dialect = self._dialect()
        payload = self._payload(dialect, messages, tools, params, stream=True)
        return self._stream(self._chat_url(dialect), payload, max_retries=0)

    def stream_chat_with_retry(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Mapping[str, Any]] | None = None,
        **params: Any,
    ) -> AsyncIterator[dict[str, Any]]:
        """Like :meth:`stream_chat`, retrying transient failures before any output.

        Connection failures, timeouts and statuses 408, 409, 429, 500, 502, 503 and 504 are
        retried up to ``max_retries`` times with exponential backoff and full jitter, waiting as
        the server asks (``Retry-After``, ``retry-after-ms``) up to 120 s. Once a chunk has been
        yielded, nothing is retried: a later failure raises :class:`LLMStreamInterrupted`
        carrying the partial text, so the caller never sees a token twice.
        """
        dialect = self._dialect()
        payload = self._payload(dialect, messages, tools, params, stream=True)
        return self._stream(self._chat_url(dialect), payload, max_retries=self._config.max_retries)

    async def _open(
        self, url: str, body: bytes, deadline: float, deadline_kind: str
    ) -> aiohttp.ClientResponse:
        """Send the request and wait for the response headers, or raise the mapped error.

        ``deadline`` is the loop time by which headers must arrive; ``deadline_kind`` says which
        configured deadline that is (``"first_token"`` or ``"total"``).
        """
        session = self._get_session()
        try:
            async with asyncio.timeout_at(deadline):
                return await session.post(
                    url,
                    data=body,
                    headers={"Content-Type": "application/json"},
                    allow_redirects=False,
                )
        except TimeoutError as exc:
            config = self._config
            if isinstance(exc, aiohttp.ServerTimeoutError):
                raise self._transport_error(exc, "POST", url, reading=False) from exc
            if deadline_kind == "total":
                raise LLMTimeoutError(
                    f"The request took longer than total_timeout ({config.total_timeout:g} s)",
                    deadline="total",
                    timeout=config.total_timeout or 0.0,
                    method="POST",
                    url=url,
                ) from exc
            raise LLMTimeoutError(
                f"No answer arrived within first_token_timeout ({config.first_token_timeout:g} s);"
                " raise it if the model is slow to load",
                deadline="first_token",
                timeout=config.first_token_timeout,
                method="POST",
                url=url,
            ) from exc
        except (aiohttp.ClientError, OSError) as exc:
            raise self._transport_error(exc, "POST", url, reading=False) from exc

    async def _stream(
        self, url: str, payload: dict[str, Any], *, max_retries: int
    ) -> AsyncIterator[dict[str, Any]]:
        config = self._config
        loop = asyncio.get_running_loop()
        total_at = (
            loop.time() + config.total_timeout if config.total_timeout is not None else math.inf
        )
        body = orjson.dumps(payload)
        delivered = 0
        text_parts: list[str] = []
        attempt = 0
        while True:
            try:
                first_token_at = loop.time() + config.first_token_timeout
                response = await self._open(
                    url,
                    body,
                    min(first_token_at, total_at),
                    "total" if total_at < first_token_at else "first_token",
                )
                request_id = _request_id(response.headers)
                if response.status >= 300:
                    raise await self._status_error(response, "POST", url)
                watchdog = _Watchdog(loop, config, response, first_token_at, total_at, "POST", url)
                try:
                    async for chunk in self._read_chunks(response, watchdog, url, request_id):
                        delivered += 1
                        choices = chunk.get("choices")
                        if choices:
                            delta = choices[0].get("delta")
                            if delta:
                                content = delta.get("content")
                                if content:
                                    text_parts.append(content)
                        elif "message" in chunk:  # Ollama native
                            message = chunk["message"]
                            if isinstance(message, dict) and message.get("content"):
                                text_parts.append(message["content"])
                        yield chunk
                finally:
                    watchdog.cancel()
                    response.close()
                return
            except LLMError as error:
                if delivered:
                    raise LLMStreamInterrupted(
                        f"The stream broke after {delivered} chunks had been delivered; "
                        f"not retried, to avoid repeating them. Cause: {error.message}",
                        partial_text="".join(text_parts),
                        chunks_received=delivered,
                        method="POST",
                        url=url,
                        request_id=error.request_id,
                    ) from error
                if _rejects_stream_options(error, payload):
                    # An older server that does not know stream_options: ask once more without
                    # it, and remember not to send it there again. Not a retry.
                    self._no_stream_options.add(url)
                    del payload["stream_options"]
                    body = orjson.dumps(payload)
                    continue
                if attempt >= max_retries or not _retry.is_retryable(error):
                    raise
                wait = self._retry_wait(error, attempt)
                if wait is None or loop.time() + wait >= total_at:
                    raise
                attempt += 1
                _log.warning(
                    "llm_retry",
                    attempt=attempt,
                    max_retries=max_retries,
                    wait=round(wait, 3),
                    error=f"{type(error).__name__}: {error.message}",
                    url=url,
                )
                if wait > 0:
                    await asyncio.sleep(wait)

    def _retry_wait(self, error: LLMError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` when the server asked for more
        than :data:`llmtap._retry.MAX_RETRY_AFTER`."""
        retry_after = error.retry_after if isinstance(error, LLMResponseError) else None
        if retry_after is not None and retry_after > _retry.MAX_RETRY_AFTER:
            return None
        if not _retry.waits_enabled():
            return 0.0
        if retry_after is not None:
            return retry_after
        config = self._config
        return _retry.backoff(attempt, config.retry_backoff_base, config.retry_backoff_max)

    async def _read_chunks(
        self,
        response: aiohttp.ClientResponse,
        watchdog: _Watchdog,
        url: str,
        request_id: str | None,
    ) -> AsyncIterator[dict[str, Any]]:
        """Decode the body into chunk dicts, raising on error objects and early ends."""
        content_type = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if content_type in ("application/json", "text/json"):
            yield await self._read_whole_json(response, watchdog, url, request_id)
            return
        if content_type not in ("text/event-stream", "application/x-ndjson", ""):
            body = await self._read_some(response, watchdog, url)
            raise LLMResponseError(
                f"The endpoint answered with {content_type or 'no content type'}, not an LLM "
                f"stream (body starts {_excerpt(body, 120)}); check endpoint and api_path",
                response.status,
                server_message=body[:2048].decode("utf-8", errors="replace"),
                method="POST",
                url=url,
                request_id=request_id,
            )
        ndjson = content_type == "application/x-ndjson"
        decoder: SSEDecoder | NDJSONDecoder = (
            NDJSONDecoder(self._config.max_line_bytes)
            if ndjson
            else SSEDecoder(self._config.max_line_bytes)
        )
        loads = orjson.loads
        clock = watchdog.clock
        stream = response.content
        finished = False
        chunks = 0
        eof = False
        while not eof:
            watchdog.wait_since = clock()
            try:
                data = await stream.readany()
            except (aiohttp.ClientError, OSError) as exc:
                raise self._transport_error(exc, "POST", url, reading=True) from exc
            watchdog.wait_since = None
            if data:
                items = decoder.feed(data)
            else:
                eof = True
                items = decoder.close()
            for item in items:
                if ndjson:
                    raw = cast(bytes, item)
                else:
                    event = cast(SSEEvent, item)
                    if event.event == "error":
                        raise self._stream_error(
                            _loads_or_text(event.data), "POST", url, request_id
                        )
                    raw = event.data
                    if raw[:6] == b"[DONE]":
                        await self._drain(response, watchdog)
                        return
                try:
                    chunk = loads(raw)
                except orjson.JSONDecodeError:
                    raise LLMStreamError(
                        f"The server sent a chunk that is not JSON: {_excerpt(raw)}",
                        method="POST",
                        url=url,
                        request_id=request_id,
                    ) from None
                if type(chunk) is not dict:
                    raise LLMStreamError(
                        f"The server sent a chunk that is not a JSON object: {_excerpt(raw)}",
                        method="POST",
                        url=url,
                        request_id=request_id,
                    )
                if chunk.get("error") is not None:
                    raise self._stream_error(chunk, "POST", url, request_id)
                if ndjson:
                    if chunk.get("done"):
                        finished = True
                else:
                    choices = chunk.get("choices")
                    if choices and choices[0].get("finish_reason"):
                        finished = True
                watchdog.got_first = True
                chunks += 1
                yield chunk
                if ndjson and finished:
                    await self._drain(response, watchdog)
                    return
        if finished:
            return
        if chunks == 0:
            raise LLMStreamError(
                "The server closed the stream without an answer (a 200 with no chunks). "
                "A prompt longer than the model's context does this on some servers",
                method="POST",
                url=url,
                request_id=request_id,
            )
        raise LLMStreamError(
            "The stream ended before the answer was complete (no [DONE] and no finish_reason)",
            method="POST",
            url=url,
            request_id=request_id,
        )

    async def _read_some(
        self, response: aiohttp.ClientResponse, watchdog: _Watchdog, url: str
    ) -> bytes:
        body = bytearray()
        try:
            while len(body) < _MAX_ERROR_BODY:
                watchdog.wait_since = watchdog.clock()
                piece = await response.content.readany()
                if not piece:
                    break
                body += piece
        except (aiohttp.ClientError, OSError) as exc:
            raise self._transport_error(exc, "POST", url, reading=True) from exc
        return bytes(body)

    async def _read_whole_json(
        self,
        response: aiohttp.ClientResponse,
        watchdog: _Watchdog,
        url: str,
        request_id: str | None,
    ) -> dict[str, Any]:
        """A server that ignored ``stream: true``: take its whole answer as one chunk."""
        body = bytearray()
        try:
            while True:
                watchdog.wait_since = watchdog.clock()
                piece = await response.content.readany()
                if not piece:
                    break
                body += piece
                if len(body) > self._config.max_line_bytes:
                    raise LLMStreamError(
                        f"The JSON answer is larger than max_line_bytes "
                        f"({self._config.max_line_bytes} bytes)",
                        method="POST",
                        url=url,
                        request_id=request_id,
                    )
        except (aiohttp.ClientError, OSError) as exc:
            raise self._transport_error(exc, "POST", url, reading=True) from exc
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise LLMResponseError(
                f"The endpoint answered with JSON that does not parse: {_excerpt(bytes(body))}; "
                "check endpoint and api_path",
                response.status,
                method="POST",
                url=url,
                request_id=request_id,
            ) from None
        if isinstance(obj, dict) and obj.get("error") is not None:
            raise self._stream_error(obj, "POST", url, request_id)
        if isinstance(obj, dict) and isinstance(obj.get("choices"), list):
            return completion_to_chunk(obj)
        if isinstance(obj, dict) and isinstance(obj.get("message"), dict) and "done" in obj:
            return obj  # Ollama native, stream: false
        raise LLMResponseError(
            f"The endpoint answered with JSON that is not a chat completion: "
            f"{_excerpt(bytes(body), 120)}; check endpoint and api_path",
            response.status,
            method="POST",
            url=url,
            request_id=request_id,
        )

    async def _drain(self, response: aiohttp.ClientResponse, watchdog: _Watchdog) -> None:
        """After the terminator, read what little is left so the connection can be reused."""
        stream = response.content
        left = _MAX_DRAIN
        try:
            while left > 0 and not stream.at_eof():
                watchdog.wait_since = watchdog.clock()
                piece = await stream.readany()
                if not piece:
                    break
                left -= len(piece)
        except (aiohttp.ClientError, OSError, LLMError):
            response.close()
            return
        if stream.at_eof():
            response.release()

    # --- preflight ------------------------------------------------------------------------

    async def _get_json(self, url: str) -> tuple[int, Any, aiohttp.ClientResponse]:
        """GET ``url``: status, parsed JSON (``None`` if not JSON), response (closed)."""
        session = self._get_session()
        try:
            async with session.get(url, allow_redirects=False) as response:
                raw = await response.read()
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            raise self._transport_error(exc, "GET", url, reading=False) from exc
        try:
            return response.status, orjson.loads(raw), response
        except orjson.JSONDecodeError:
            return response.status, None, response

    async def preflight_check(self) -> PreflightReport:
        """Check that the server is up and has the model; pick the model if none is set.

        Works against Ollama (``/api/tags``) and OpenAI-compatible servers (``/v1/models``:
        llama.cpp, vLLM, LM Studio, OpenAI). The whole check is bounded by
        ``preflight_timeout``.

        Returns:
            What was found; the client then uses the resolved model name.

        Raises:
            LLMConnectionError: Nothing answers at the endpoint (``LLMTimeoutError`` if the
                check ran past ``preflight_timeout``).
            LLMResponseError: The server refused (auth), is still loading, has no such model,
                or is not an LLM API at that URL.
        """
        config = self._config
        started = time.monotonic()
        try:
            async with asyncio.timeout(config.preflight_timeout):
                server, version, models, model, warnings = await self._preflight()
        except TimeoutError as exc:
            raise LLMTimeoutError(
                f"Preflight got no complete answer from {config.endpoint} within "
                f"preflight_timeout ({config.preflight_timeout:g} s); the server may be "
                "overloaded or the address may be wrong",
                deadline="preflight",
                timeout=config.preflight_timeout,
                method="GET",
                url=config.endpoint,
            ) from exc
        self._server = server
        self._model = model
        return PreflightReport(
            server=server,
            version=version,
            models=tuple(models),
            model=model,
            latency=time.monotonic() - started,
            warnings=tuple(warnings),
            endpoint=config.endpoint,
        )

    async def _preflight(self) -> tuple[ServerKind, str | None, list[str], str, list[str]]:
        config = self._config
        version_url = config.url_for("/api/version")
        status, body, response = await self._get_json(version_url)
        if status == 200 and isinstance(body, dict) and isinstance(body.get("version"), str):
            return await self._preflight_ollama(body["version"])
        self._raise_for_refusal(status, body, response, "GET", version_url)
        return await self._preflight_openai()

    def _raise_for_refusal(
        self, status: int, body: Any, response: aiohttp.ClientResponse, method: str, url: str
    ) -> None:
        """Auth refusals and llama.cpp's loading answer end preflight on any route."""
        if status in (401, 403):
            info = parse_error_object(body) if body is not None else None
            raise LLMResponseError(
                f"The server refused the credentials ({status}"
                f"{': ' + info.message if info and info.message else ''}). "
                "Set LLMTAP_API_KEY (or api_key=) to a valid key",
                status,
                server_message=info.message if info else None,
                method=method,
                url=url,
                request_id=_request_id(response.headers),
            )
        if status == 503:
            info = parse_error_object(body) if body is not None else None
            loading = info is not None and "loading" in info.message.lower()
            raise LLMResponseError(
                (
                    f"The server at {self._config.endpoint} is loading its model; it is not "
                    "down. Try again in a few seconds"
                )
                if loading
                else f"The server at {self._config.endpoint} is unavailable (503); try again",
                503,
                server_message=info.message if info else None,
                retry_after=_retry.parse_retry_after(response.headers),
                method=method,
                url=url,
                request_id=_request_id(response.headers),
            )

    async def _preflight_ollama(
        self, version: str
    ) -> tuple[ServerKind, str | None, list[str], str, list[str]]:
        config = self._config
        tags_url = config.url_for("/api/tags")
        status, body, response = await self._get_json(tags_url)
        if status != 200 or body is None:
            self._raise_for_refusal(status, body, response, "GET", tags_url)
            raise LLMResponseError(
                f"Ollama answered {status} to /api/tags with "
                f"{'a body that is not JSON' if body is None else 'an unexpected body'}",
                status,
                method="GET",
                url=tags_url,
            )
        models = read_ollama_tags(body)
        model = self._pick_model(
            models,
            lambda wanted: _ollama_match(wanted, models),
            how_to_get="run `ollama pull {}`",
        )
        return "ollama", version, models, model, []

    async def _preflight_openai(
        self,
    ) -> tuple[ServerKind, str | None, list[str], str, list[str]]:
        config = self._config
        models_url = config.url_for("/v1/models")
        status, body, response = await self._get_json(models_url)
        self._raise_for_refusal(status, body, response, "GET", models_url)
        if status == 404:
            raise LLMResponseError(
                f"No LLM API at {config.endpoint}: {models_url} answered 404. Check the port "
                "and path (Ollama listens on 11434, llama.cpp on 8080, vLLM on 8000; an "
                "OpenAI-style endpoint may need a /v1 suffix)",
                404,
                method="GET",
                url=models_url,
            )
        if status != 200 or body is None:
            raise LLMResponseError(
                f"{models_url} answered {status} with "
                f"{'a body that is not JSON' if body is None else 'an unexpected body'}; "
                "is this an LLM API?",
                status,
                method="GET",
                url=models_url,
            )
        try:
            server, models, aliases = read_model_listing(body)
        except ValueError as exc:
            raise LLMResponseError(
                f"{models_url} answered with {exc}; is this an LLM API?",
                status,
                method="GET",
                url=models_url,
            ) from exc
        warnings: list[str] = []
        version: str | None = None
        if server == "vllm":
            _, version_body, _ = await self._get_json(config.root_url + "/version")
            if isinstance(version_body, dict) and isinstance(version_body.get("version"), str):
                version = version_body["version"]
        if server == "llama.cpp" and len(models) == 1 and self._model:
            found = match_model(self._model, models, aliases)
            if found is None:
                warnings.append(
                    f"Model {self._model!r} is not listed; this llama.cpp server serves only "
                    f"{models[0]!r} and answers with it whatever name is asked"
                )
                return server, version, models, self._model, warnings
        model = self._pick_model(
            models,
            lambda wanted: match_model(wanted, models, aliases),
            how_to_get="start the server with that model, or pick one that is listed",
        )
        return server, version, models, model, warnings

    def _pick_model(
        self, models: list[str], find: Callable[[str], str | None], *, how_to_get: str
    ) -> str:
        """The model to use: the configured one as the server names it, or the only one."""
        config = self._config
        listing = ", ".join(models) if models else "(none)"
        if not self._model:
            if len(models) == 1:
                return models[0]
            if not models:
                raise LLMResponseError(
                    f"The server at {config.endpoint} has no models. With Ollama, "
                    "`ollama pull <model>` first",
                    404,
                    method="GET",
                    url=config.endpoint,
                )
            raise LLMUsageError(
                f"No model is set and the server has several: {listing}. Set "
                "LLMConfig(model=...) or LLMTAP_MODEL to one of them"
            )
        found = find(self._model)
        if found is None:
            raise LLMResponseError(
                f"Model {self._model!r} is not on the server; {how_to_get.format(self._model)}. "
                f"Available: {listing}",
                404,
                method="GET",
                url=config.endpoint,
            )
        return found


def _ollama_match(wanted: str, models: list[str]) -> str | None:
    canonical = canonical_ollama_name(wanted)
    for name in models:
        if canonical_ollama_name(name) == canonical:
            return name
    return None


def _request_id(headers: Mapping[str, str]) -> str | None:
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


def _loads_or_text(data: bytes) -> Any:
    """An ``event: error`` payload: JSON if it parses, else its text."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", errors="replace")
    if isinstance(obj, dict) and "error" not in obj:
        return {"error": obj}
    return obj


def _rejects_stream_options(error: LLMError, payload: dict[str, Any]) -> bool:
    return (
        isinstance(error, LLMResponseError)
        and error.status_code == 400
        and "stream_options" in payload
        and "stream_options" in (error.server_message or "")
    )
