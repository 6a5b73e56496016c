"""One HTTP exchange with an LLM server: its deadlines, its body, its errors.

Below the client: it knows aiohttp responses and the decoders, and nothing of retries. Every
low-level failure leaves here as the most specific :class:`~llmtap.LLMError`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

import orjson

from llmtap import _retry
from llmtap._config import LLMConfig
from llmtap._dialects import completion_to_chunk, parse_error_body, parse_error_object
from llmtap._errors import (
    LLMConnectionError,
    LLMError,
    LLMRateLimitError,
    LLMResponseError,
    LLMStreamError,
    LLMStreamInterrupted,
    LLMTimeoutError,
)
from llmtap._ndjson import NDJSONDecoder
from llmtap._sse import SSEDecoder

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "ChunkSink",
    "Exchange",
    "chunk_text",
    "next_bytes",
    "request_id_of",
    "stream_error",
    "transport_error",
]

#: Most bytes of an error body read and parsed.
MAX_ERROR_BODY = 64 * 1024
#: Most bytes read after the terminator to let the connection go back to the pool.
_MAX_DRAIN = 64 * 1024
_REQUEST_ID_HEADERS = ("x-request-id", "request-id", "x-amzn-requestid")
_JSON_TYPES = frozenset({"application/json", "text/json"})
_STREAM_TYPES = frozenset({"text/event-stream", "application/x-ndjson", ""})
_DEADLINE_TEXT = {
    "first_token": "No answer arrived within first_token_timeout",
    "idle": "The server went silent for longer than idle_timeout",
    "total": "The request took longer than total_timeout",
}


class ChunkSink(Protocol):
    """Where a reader sends each chunk instead of yielding it (see ``read_chunks``)."""

    def take(self, chunk: dict[str, Any]) -> Sequence[Any]:
        """What to yield for ``chunk``, in order (possibly nothing)."""
        ...

    @property
    def text(self) -> str:
        """The text delivered so far."""
        ...


def transport_errors(*also: type[BaseException]) -> tuple[type[BaseException], ...]:
    """The low-level exceptions a request or read can raise, aiohttp's and the OS's, and
    ``also``. (aiohttp is imported on first use, not with llmtap; by then it is loaded.)"""
    import aiohttp

    return (aiohttp.ClientError, OSError, *also)


def excerpt(data: bytes | str, limit: int = 200) -> str:
    """A short, quoted piece of ``data`` for an error message."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    return repr(text if len(text) <= limit else text[:limit] + "…")


def request_id_of(headers: Mapping[str, str]) -> str | None:
    """The server's request id, from whichever header it uses."""
    for name in _REQUEST_ID_HEADERS:
        value = headers.get(name)
        if value:
            return value
    return None


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
    import aiohttp

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


def stream_error(obj: Any, method: str, url: str, request_id: str | None) -> LLMResponseError:
    """The error for an error object the server sent inside a 200 answer."""
    info = parse_error_object(obj)
    cls = LLMRateLimitError if info.number == 429 else LLMResponseError
    return cls(
        f"The server reported an error mid-stream: {info.message}",
        info.number,
        server_message=info.message,
        error_type=info.type,
        error_code=info.code,
        method=method,
        url=url,
        request_id=request_id,
    )


def chunk_text(chunk: dict[str, Any]) -> str | None:
    """The text content a raw chunk carries (OpenAI-style or Ollama native); ``None`` when
    it carries none, or carries something other than text where text belongs."""
    try:
        choices = chunk.get("choices")
        if choices:
            delta = choices[0].get("delta")
            content = delta.get("content") if delta else None
        else:
            message = chunk.get("message")
            content = message.get("content") if isinstance(message, dict) else None
    except (AttributeError, TypeError, KeyError, IndexError):
        return None
    return content if type(content) is str else None


def _interrupted(
    error: LLMError, delivered: int, partial: list[str] | None, sink: ChunkSink | None
) -> LLMStreamInterrupted:
    """A reader's failure after ``delivered`` items reached the caller, with the text they
    carried: collected by the reader (``partial``) or known to the sink."""
    text = "".join(partial) if partial is not None else sink.text if sink is not None else ""
    return LLMStreamInterrupted.after(error, text, delivered)


def _loads_or_text(data: bytes) -> Any:
    """An ``event: error`` payload: JSON if it parses, else its text."""
    try:
        obj = orjson.loads(data)
    except orjson.JSONDecodeError:
        return data.decode("utf-8", errors="replace")
    if isinstance(obj, dict) and "error" not in obj:
        return {"error": obj}
    return obj


async def next_bytes(content: aiohttp.StreamReader, loop: asyncio.AbstractEventLoop) -> bytes:
    """What ``content.readany()`` gives (the bytes buffered, once there are some; ``b""`` at
    the end; the stream's error, if it has one), at less CPU per read.

    ``readany`` waits through two more coroutine frames, a timer context and a connection
    check, which at one token per read come to a few per cent of a stream's CPU. This keeps
    only its waiting, on the same attributes of aiohttp's ``StreamReader`` (``_buffer``,
    ``_eof``, ``_exception``, ``_waiter``: all there since aiohttp 3.0; a test checks them),
    and takes the bytes with the public ``read_nowait``, which does the bookkeeping.
    """
    buffer = content._buffer
    while not buffer and not content._eof and content._exception is None:
        # feed_data(), feed_eof() and set_exception() complete the waiter.
        waiter = content._waiter = loop.create_future()
        try:
            await waiter
        finally:
            content._waiter = None
    return content.read_nowait()


class Exchange:
    """A response whose headers have arrived, and the deadlines for reading its body.

    Deadlines cost two attribute writes per read: one timer, armed once at the earliest
    deadline that could pass (never further than ``idle_timeout`` ahead), looks at the state
    when it fires and re-arms itself if nothing has expired; nothing is rescheduled per chunk.
    When a deadline passes, the pending read fails with :class:`LLMTimeoutError` and the
    connection is closed. Time the caller spends between reads never counts as server silence.

    Args:
        config: Deadline values and limits.
        response: The aiohttp response (status and headers read, body not).
        method: The request's method, for error messages.
        url: The request's URL, for error messages.
        first_token_at: Loop time by which the first chunk (or, for a whole JSON body, the
            whole body) must have arrived.
        total_at: Loop time by which everything must be done (``math.inf`` for none).
    """

    __slots__ = (
        "_first_token_at",
        "_handle",
        "_loop",
        "config",
        "ended_at",
        "got_first",
        "method",
        "response",
        "total_at",
        "url",
        "wait_since",
    )

    def __init__(
        self,
        config: LLMConfig,
        response: aiohttp.ClientResponse,
        method: str,
        url: str,
        first_token_at: float,
        total_at: float,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self.config = config
        self.response = response
        self.method = method
        self.url = url
        self._first_token_at = first_token_at
        self.total_at = total_at
        self.got_first = False
        #: Loop time at which the whole answer had been read (``None`` until it has).
        self.ended_at: float | None = None
        self.wait_since: float | None = None
        self._handle: asyncio.TimerHandle | None = None

    @property
    def request_id(self) -> str | None:
        """The server's request id, for error messages (looked up only when one is made)."""
        return request_id_of(self.response.headers)

    # --- deadlines ------------------------------------------------------------------------

    def _arm(self) -> None:
        if self._handle is None:
            when = min(self._first_token_at, self._loop.time() + self.config.idle_timeout)
            self._handle = self._loop.call_at(min(when, self.total_at), self._fire)

    def _fire(self) -> None:
        # The timer never sleeps past now + idle_timeout: when the first chunk arrives, the
        # idle deadline takes over without the timer being moved (no per-answer re-arm).
        config = self.config
        now = self._loop.time()
        if now >= self.total_at:
            self._expire("total", config.total_timeout or 0.0)
            return
        if not self.got_first:
            if now >= self._first_token_at:
                self._expire("first_token", config.first_token_timeout)
                return
            when = min(self._first_token_at, now + config.idle_timeout)
        elif self.wait_since is not None:
            when = self.wait_since + config.idle_timeout
            if now >= when:
                self._expire("idle", config.idle_timeout)
                return
        else:  # the caller holds the stream: no read can time out before now + idle
            when = now + config.idle_timeout
        self._handle = self._loop.call_at(min(when, self.total_at), self._fire)

    def _first_chunk(self) -> None:
        """The first chunk arrived: from now on the idle deadline applies (the timer, never
        set further than ``idle_timeout`` ahead, sees it at its next firing)."""
        self.got_first = True

    def _expire(self, deadline: str, timeout: float) -> None:
        self.response.content.set_exception(timeout_error(deadline, timeout, self.method, self.url))
        self.response.close()

    def close(self) -> None:
        """Stop the deadlines and close the response (the connection is not reused)."""
        if self._handle is not None:
            self._handle.cancel()
        self.response.close()

    # --- reading --------------------------------------------------------------------------

    def _error_fields(self) -> dict[str, Any]:
        return {"method": self.method, "url": self.url, "request_id": self.request_id}

    async def _read_body(self, limit: int, *, strict: bool) -> bytes:
        """Up to ``limit`` bytes of the body; past it, raise (``strict``) or stop."""
        self._arm()
        body = bytearray()
        stream = self.response.content
        clock = self._loop.time
        try:
            while True:
                self.wait_since = clock()
                piece = await stream.readany()
                if not piece:
                    break
                body += piece
                if len(body) > limit:
                    if strict:
                        raise LLMStreamError(
                            f"The answer is larger than max_line_bytes ({limit} bytes)",
                            **self._error_fields(),
                        )
                    break
        except transport_errors() as exc:
            raise transport_error(exc, self.config, self.method, self.url, reading=True) from exc
        return bytes(body[:limit])

    async def status_error(self) -> LLMResponseError:
        """Read (a bounded part of) an error response and describe it; closes the response."""
        response = self.response
        try:
            body = await self._read_body(MAX_ERROR_BODY, strict=False)
        except LLMError:
            body = b""
        finally:
            self.close()
        info = parse_error_body(body)
        status = response.status
        headers = response.headers
        server_message = info.message or response.reason or ""
        if 300 <= status < 400:
            message = (
                f"The server redirected to {headers.get('Location', '(no Location header)')}; "
                "llmtap does not follow redirects (they could carry the API key to another "
                "host). Set endpoint to the new URL"
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
            retry_after=_retry.parse_retry_after(headers),
            should_retry=_retry.should_retry_header(headers),
            **self._error_fields(),
        )

    def _content_type(self) -> str:
        header = self.response.headers.get("Content-Type", "")
        return header.partition(";")[0].strip().lower()

    async def _not_an_llm(self, content_type: str) -> LLMResponseError:
        body = await self._read_body(MAX_ERROR_BODY, strict=False)
        return LLMResponseError(
            f"The endpoint answered with {content_type or 'no content type'}, not an LLM "
            f"answer (body starts {excerpt(body, 120)}); check endpoint and api_path",
            self.response.status,
            server_message=body[:2048].decode("utf-8", errors="replace"),
            **self._error_fields(),
        )

    async def read_json(self, *, chat: bool = True) -> dict[str, Any]:
        """A whole JSON answer, which must arrive within ``first_token_timeout``.

        Args:
            chat: Require a chat answer (an OpenAI ``chat.completion`` or an Ollama native
                object); otherwise any JSON object that is not an error is returned.
        """
        content_type = self._content_type()
        if content_type not in _JSON_TYPES:
            raise await self._not_an_llm(content_type)
        body = await self._read_body(self.config.max_line_bytes, strict=True)
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise LLMResponseError(
                f"The endpoint answered with JSON that does not parse: {excerpt(body)}; "
                "check endpoint and api_path",
                self.response.status,
                **self._error_fields(),
            ) from None
        if isinstance(obj, dict):
            if obj.get("error") is not None:
                raise stream_error(obj, self.method, self.url, self.request_id)
            if not chat:
                return obj
            if isinstance(obj.get("choices"), list):
                return obj
            if isinstance(obj.get("message"), dict) and "done" in obj:
                return obj  # Ollama native
        expected = "a chat completion" if chat else "a JSON object"
        raise LLMResponseError(
            f"The endpoint answered with JSON that is not {expected}: "
            f"{excerpt(body, 120)}; check endpoint and api_path",
            self.response.status,
            **self._error_fields(),
        )

    def read_chunks(
        self, *, sink: ChunkSink | None = None, interrupted: bool = False
    ) -> AsyncGenerator[Any, None]:
        """The body decoded into chunk dicts as the server sent them. The caller closes the
        exchange when it is done with them (:meth:`close`), however that ends; a streamed
        body's reader also closes it when it ends or is closed. :attr:`ended_at` is set once
        the whole answer has been read.

        Error objects in the stream (``data: {"error": ...}``, ``event: error``, old
        llama.cpp ``error:`` lines, Ollama native ``{"error": ...}`` lines) raise
        :class:`LLMResponseError`. An answer that ends before it is complete raises
        :class:`LLMStreamError`: a body with neither a terminator nor a finish, or a
        ``[DONE]`` that no ``finish_reason`` preceded (llama-cpp-python ends an answer cut
        short by a newer request that way). A whole JSON answer (a server that ignored
        ``stream: true``) is yielded as one chunk.

        Args:
            sink: Each chunk goes to ``sink.take``, and what that returns is yielded in its
                place (typed events; nothing at all for ``chat()``).
            interrupted: Once something has been yielded, raise any failure as
                :class:`LLMStreamInterrupted` carrying the text delivered so far (the
                sink's ``text``, or the chunks' own), rather than as itself.

        Both are done here, not in generators around this one, because each such layer
        costs CPU per token.
        """
        content_type = self._content_type()
        if content_type in _JSON_TYPES:
            return self._whole_json(sink)
        if content_type not in _STREAM_TYPES:
            return self._not_an_llm_stream(content_type)
        self._arm()
        if content_type == "application/x-ndjson":
            return self._read_ndjson(sink, interrupted)
        return self._read_sse(sink, interrupted)

    async def _whole_json(self, sink: ChunkSink | None) -> AsyncGenerator[Any, None]:
        obj = await self.read_json()
        self.ended_at = self._loop.time()
        chunk = completion_to_chunk(obj) if "choices" in obj else obj
        if sink is None:
            yield chunk
        else:
            for item in sink.take(chunk):
                yield item

    async def _not_an_llm_stream(self, content_type: str) -> AsyncGenerator[dict[str, Any], None]:
        raise await self._not_an_llm(content_type)
        yield {}  # never reached: it makes this an async generator like the other readers

    def _read_error(self, exc: BaseException) -> LLMError:
        return transport_error(exc, self.config, self.method, self.url, reading=True)

    def _parse(self, raw: bytes) -> dict[str, Any]:
        """One chunk's JSON; a chunk that is not a JSON object, or is an error, raises."""
        try:
            chunk = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise self._not_json(raw) from None
        if type(chunk) is not dict or chunk.get("error") is not None:
            raise self._bad_chunk(raw, chunk)
        return chunk

    def _not_json(self, raw: bytes) -> LLMStreamError:
        return LLMStreamError(
            f"The server sent a chunk that is not JSON: {excerpt(raw)}", **self._error_fields()
        )

    def _bad_chunk(self, raw: bytes, chunk: Any) -> LLMError:
        """The error for a chunk that parsed but is not a JSON object, or is an error."""
        if type(chunk) is not dict:
            return LLMStreamError(
                f"The server sent a chunk that is not a JSON object: {excerpt(raw)}",
                **self._error_fields(),
            )
        return stream_error(chunk, self.method, self.url, self.request_id)

    async def _read_sse(
        self, sink: ChunkSink | None, interrupted: bool
    ) -> AsyncGenerator[Any, None]:
        # The per-token hot path: one read usually carries one event, taken whole by
        # ``lone_data`` without splitting lines or building an event object.
        # Bound methods are not kept in locals: each would be one more object per stream
        # for the garbage collector, and Python 3.11 calls methods without making them.
        decoder = SSEDecoder(self.config.max_line_bytes)
        content = self.response.content
        loop = self._loop
        loads = orjson.loads
        errors = transport_errors()
        partial: list[str] | None = [] if interrupted and sink is None else None
        finished = False
        chunks = delivered = 0
        try:
            while True:
                self.wait_since = loop.time()
                try:
                    data = await next_bytes(content, loop)
                except errors as exc:
                    raise self._read_error(exc) from exc
                self.wait_since = None
                lone = decoder.lone_data(data)
                for raw in (lone,) if lone is not None else self._payloads(decoder, data):
                    if not isinstance(raw, bytes):
                        raise raw
                    if raw.startswith(b"[DONE]"):
                        if not finished:
                            raise self._cut_short("[DONE] came before any finish_reason", chunks)
                        self.ended_at = loop.time()
                        await self._drain()
                        return
                    # ``_parse`` and ``chunk_text``, written inline (one call fewer each per
                    # token); a change to either belongs here too.
                    try:
                        chunk = loads(raw)
                    except orjson.JSONDecodeError:
                        raise self._not_json(raw) from None
                    if type(chunk) is not dict or chunk.get("error") is not None:
                        raise self._bad_chunk(raw, chunk)
                    choices = chunk.get("choices")
                    if choices:
                        try:
                            choice = choices[0]
                            if not finished:
                                finished = bool(choice.get("finish_reason"))
                        except (AttributeError, TypeError, KeyError, IndexError):
                            raise self._unexpected_shape(raw) from None
                        if partial is not None and type(choice) is dict:
                            delta = choice.get("delta")
                            if type(delta) is dict:
                                text = delta.get("content")
                                if text and type(text) is str:
                                    partial.append(text)
                    if not chunks:
                        self._first_chunk()
                    chunks += 1
                    if sink is None:
                        delivered += 1
                        yield chunk
                    else:
                        for item in sink.take(chunk):
                            delivered += 1
                            yield item
                if not data:
                    break
            if not finished:
                raise self._cut_short("no [DONE] and no finish_reason", chunks)
            self.ended_at = loop.time()
        except LLMError as error:
            if not interrupted or not delivered:
                raise
            raise _interrupted(error, delivered, partial, sink) from error
        finally:
            self.close()

    def _payloads(self, decoder: SSEDecoder, data: bytes) -> list[bytes | LLMResponseError]:
        """The data of the events ``data`` completes (all that is left, at the end of the
        body: ``data`` is empty), in order; an error event becomes the error to raise."""
        return [
            event.data
            if event.event != "error"
            else stream_error(_loads_or_text(event.data), self.method, self.url, self.request_id)
            for event in (decoder.feed(data) if data else decoder.close())
        ]

    async def _read_ndjson(
        self, sink: ChunkSink | None, interrupted: bool
    ) -> AsyncGenerator[Any, None]:
        decoder = NDJSONDecoder(self.config.max_line_bytes)
        content = self.response.content
        loop = self._loop
        errors = transport_errors()
        partial: list[str] | None = [] if interrupted and sink is None else None
        chunks = delivered = 0
        try:
            while True:
                self.wait_since = loop.time()
                try:
                    data = await next_bytes(content, loop)
                except errors as exc:
                    raise self._read_error(exc) from exc
                self.wait_since = None
                for line in decoder.feed(data) if data else decoder.close():
                    chunk = self._parse(line)
                    if not chunks:
                        self._first_chunk()
                    chunks += 1
                    done = chunk.get("done")
                    if done:
                        self.ended_at = loop.time()
                    if sink is None:
                        if partial is not None and (text := chunk_text(chunk)):
                            partial.append(text)
                        delivered += 1
                        yield chunk
                    else:
                        for item in sink.take(chunk):
                            delivered += 1
                            yield item
                    if done:
                        await self._drain()
                        return
                if not data:
                    break
            raise self._cut_short("no line with done: true", chunks)
        except LLMError as error:
            if not interrupted or not delivered:
                raise
            raise _interrupted(error, delivered, partial, sink) from error
        finally:
            self.close()

    def _unexpected_shape(self, raw: bytes) -> LLMStreamError:
        return LLMStreamError(
            f"The server sent a chunk of an unexpected shape: {excerpt(raw)}",
            **self._error_fields(),
        )

    def _cut_short(self, what: str, chunks: int) -> LLMStreamError:
        if chunks == 0:
            return LLMStreamError(
                "The server closed the stream without an answer (a 200 with no chunks). "
                "A prompt longer than the model's context does this on some servers",
                **self._error_fields(),
            )
        return LLMStreamError(
            f"The stream ended before the answer was complete ({what})", **self._error_fields()
        )

    async def _drain(self) -> None:
        """After the terminator, read what little is left so the connection can be reused."""
        stream = self.response.content
        left = _MAX_DRAIN
        clock = self._loop.time
        try:
            while left > 0 and not stream.at_eof():
                self.wait_since = clock()
                piece = await stream.readany()
                if not piece:
                    break
                left -= len(piece)
        except transport_errors(LLMError):
            return  # close() follows
        if stream.at_eof() and self._handle is not None:
            self._handle.cancel()
            self._handle = None
            self.response.release()
