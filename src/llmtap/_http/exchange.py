"""One HTTP exchange with an LLM server once its headers have arrived: the deadlines for its
body, the body itself (bounded), and the one loop that reads a streamed body.

What the body means is not decided here: a decoder from ``llmtap._wire.chunks`` is fed every
read and says which items it completes and whether the stream ended or went bad; this loop
only reads, feeds, hands the items on and keeps the deadlines. What a failure means to the
caller (for instance that output had already reached it) is decided above, through the
``on_failure`` callback.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable, Sequence
from functools import partial
from typing import Any, NoReturn

import aiohttp
import orjson

from llmtap._config import LLMConfig
from llmtap._errors import LLMError, LLMResponseError, LLMStreamError
from llmtap._http import internals
from llmtap._http.status import (
    request_id_of,
    response_error,
    timeout_error,
    transport_error,
    transport_errors,
)
from llmtap._wire.chunks import (
    ChunkDecoder,
    NDJSONChunks,
    ResponsesChunks,
    Sink,
    SSEChunks,
    excerpt,
)
from llmtap._wire.dialects import ErrorInfo, completion_to_chunk, parse_error_body
from llmtap._wire.responses import response_to_completion

__all__ = ["MAX_ERROR_BODY", "Exchange", "OnClose", "OnEnd", "OnFailure", "OnFirst"]

#: Most bytes of an error body read and parsed.
MAX_ERROR_BODY = 64 * 1024
#: Most bytes fed to a decoder at once: a burst of tiny chunks (a slow reader's backlog) is
#: decoded a slice at a time, so that the chunks held at once stay few.
_MAX_FEED = 64 * 1024
#: Most bytes read after the terminator to let the connection go back to the pool.
_MAX_DRAIN = 64 * 1024
_JSON_TYPES = frozenset({"application/json", "text/json"})
_STREAM_TYPES = frozenset({"text/event-stream", "application/x-ndjson", ""})

#: Called once, when the first chunk of a body arrives; what it returns, unless ``None``,
#: is awaited (so that a callback with nothing to wait for costs no coroutine).
OnFirst = Callable[[], Awaitable[None] | None]
#: Called once, when the body has been read to its proper end, with the decoder that read
#: it; what it returns, unless ``None``, is awaited.
OnEnd = Callable[[ChunkDecoder | None], Awaitable[None] | None]
#: Called with a failure and the number of items delivered before it; returns what to raise.
OnFailure = Callable[[LLMError, int], Awaitable[LLMError]]
#: Called when the reader closes, however it ended (after ``OnEnd`` or ``OnFailure``).
OnClose = Callable[[], None]


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
        "decoder",
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
        #: The decoder reading a streamed body, once reading has begun.
        self.decoder: ChunkDecoder | None = None

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

    def _expire(self, deadline: str, timeout: float) -> None:
        self.response.content.set_exception(timeout_error(deadline, timeout, self.method, self.url))
        self.response.close()

    def close(self) -> None:
        """Stop the deadlines and close the response (the connection is not reused)."""
        if self._handle is not None:
            self._handle.cancel()
        self.response.close()

    # --- whole bodies ---------------------------------------------------------------------

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
                            method=self.method,
                            url=self.url,
                            request_id=self.request_id,
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
        return response_error(
            response.status,
            parse_error_body(body),
            method=self.method,
            url=self.url,
            headers=response.headers,
            reason=response.reason,
        )

    def _content_type(self) -> str:
        header = self.response.headers.get("Content-Type", "")
        return header.partition(";")[0].strip().lower()

    async def _not_an_llm(self, content_type: str) -> LLMResponseError:
        body = await self._read_body(MAX_ERROR_BODY, strict=False)
        return self._not_an_answer(
            f"The endpoint answered with {content_type or 'no content type'}, not an LLM "
            f"answer (body starts {excerpt(body, 120)}); check endpoint and api_path",
            server_message=body[:2048].decode("utf-8", errors="replace"),
        )

    def _not_an_answer(self, message: str, server_message: str | None = None) -> LLMResponseError:
        """The error for a body that is not what was asked for (at this response's status)."""
        return LLMResponseError(
            message,
            self.response.status,
            server_message=server_message,
            method=self.method,
            url=self.url,
            request_id=self.request_id,
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
        self.ended_at = self._loop.time()
        try:
            obj = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise self._not_an_answer(
                f"The endpoint answered with JSON that does not parse: {excerpt(body)}; "
                "check endpoint and api_path"
            ) from None
        if isinstance(obj, dict):
            if obj.get("error") is not None:
                raise self._server_error(parse_error_body(body))
            if not chat:
                return obj
            if isinstance(obj.get("choices"), list):
                return obj
            if isinstance(obj.get("message"), dict) and "done" in obj:
                return obj  # Ollama native
            if obj.get("object") == "response" and isinstance(obj.get("output"), list):
                return obj  # the Responses API
        expected = "a chat completion" if chat else "a JSON object"
        raise self._not_an_answer(
            f"The endpoint answered with JSON that is not {expected}: "
            f"{excerpt(body, 120)}; check endpoint and api_path"
        )

    def _server_error(self, info: ErrorInfo) -> LLMResponseError:
        """An error object the server sent in a 200 answer, as its error."""
        return response_error(
            info.number,
            info,
            method=self.method,
            url=self.url,
            route="stream",
            headers=self.response.headers,
        )

    # --- streamed bodies ------------------------------------------------------------------

    def read_answer(
        self,
        *,
        sink: Sink | None = None,
        collect_text: bool = False,
        responses: bool = False,
        output_limit: int | None = None,
        on_first: OnFirst | None = None,
        on_end: OnEnd | None = None,
        on_failure: OnFailure | None = None,
        on_close: OnClose | None = None,
    ) -> AsyncGenerator[Any, None]:
        """The chat answer in the body, as chunk dicts (or what ``sink`` makes of them): an
        SSE or NDJSON stream, or a whole JSON answer (from a server that ignored ``stream:
        true``, or asked for without streaming) as one chunk; ``responses``: a Responses API
        answer (typed events; ``output_limit``: the request's ``max_output_tokens``). See
        :meth:`read`."""
        content_type = self._content_type()
        config = self.config
        if content_type in _JSON_TYPES:
            return self._whole(
                sink, on_first, on_end, on_failure, on_close, chat=True, output_limit=output_limit
            )
        if content_type not in _STREAM_TYPES:
            return self._not_an_llm_stream(content_type, on_failure, on_close)
        kind: Callable[..., ChunkDecoder]
        if content_type == "application/x-ndjson":
            kind = NDJSONChunks
        elif responses:
            kind = partial(ResponsesChunks, output_limit=output_limit)
        else:
            kind = SSEChunks
        decoder = kind(
            config.max_line_bytes, self.method, self.url, sink=sink, collect_text=collect_text
        )
        return self.read(
            decoder, on_first=on_first, on_end=on_end, on_failure=on_failure, on_close=on_close
        )

    def read_object(
        self,
        *,
        decode: Callable[[dict[str, Any]], Any] | None = None,
        on_first: OnFirst | None = None,
        on_end: OnEnd | None = None,
        on_failure: OnFailure | None = None,
        on_close: OnClose | None = None,
    ) -> AsyncGenerator[Any, None]:
        """The whole JSON object in the body (an embeddings answer, ...), or what ``decode``
        makes of it (raising :class:`LLMError` if it cannot), as one item."""
        return self._whole(None, on_first, on_end, on_failure, on_close, chat=False, decode=decode)

    async def _whole(
        self,
        sink: Sink | None,
        on_first: OnFirst | None,
        on_end: OnEnd | None,
        on_failure: OnFailure | None,
        on_close: OnClose | None,
        *,
        chat: bool,
        decode: Callable[[dict[str, Any]], Any] | None = None,
        output_limit: int | None = None,
    ) -> AsyncGenerator[Any, None]:
        """A whole JSON answer as one item: a chat answer as one chunk (or the sink's events
        for it), anything else as the object."""
        try:
            obj = await self.read_json(chat=chat)
            if on_first is not None and (waiting := on_first()) is not None:
                await waiting
            if not chat:
                items: Sequence[Any] = [obj if decode is None else decode(obj)]
            elif sink is not None:
                if obj.get("object") == "response":  # a whole Responses answer (read_json)
                    obj = response_to_completion(obj, output_limit)
                items = sink.take_whole(obj)
            else:
                items = [completion_to_chunk(obj) if "choices" in obj else obj]
            if on_end is not None and (waiting := on_end(None)) is not None:
                await waiting
        except LLMError as error:
            await self._failed(error, 0, on_failure)
        finally:
            self._closed(on_close)
        for item in items:
            yield item

    async def _not_an_llm_stream(
        self, content_type: str, on_failure: OnFailure | None, on_close: OnClose | None
    ) -> AsyncGenerator[Any, None]:
        try:
            await self._failed(await self._not_an_llm(content_type), 0, on_failure)
        finally:
            self._closed(on_close)
        yield {}  # never reached: it makes this an async generator like the other readers

    async def read(
        self,
        decoder: ChunkDecoder,
        *,
        on_first: OnFirst | None = None,
        on_end: OnEnd | None = None,
        on_failure: OnFailure | None = None,
        on_close: OnClose | None = None,
    ) -> AsyncGenerator[Any, None]:
        """The items ``decoder`` makes of the body, as they arrive; the one read loop.

        Every read goes to the decoder; the items it returns are handed on, and then a
        failure it noted is raised (so nothing that arrived whole before a failure is
        lost). The exchange is closed when the loop ends, however it ends; the connection
        goes back to the pool when the body was read to its end.

        Args:
            decoder: What the body means (see ``llmtap._wire.chunks``).
            on_first: Called when the first chunk arrives (what it returns, if anything, is
                awaited).
            on_end: Called when the body has been read to its proper end (likewise).
            on_failure: Awaited with a failure and the count of items delivered before it;
                what it returns is raised in its place (the same error, or another).
            on_close: Called when the loop ends, however it ends.

        Raises:
            LLMError: The body could not be read, a deadline passed, or the decoder found the
                stream cut short, malformed or carrying an error.
        """
        # The per-token hot path. Bound methods are not kept in locals: each would be one
        # more object per stream for the garbage collector, and Python 3.11 calls methods
        # without making them.
        self.decoder = decoder
        self._arm()
        content = self.response.content
        loop = self._loop
        read = internals.next_bytes
        errors = transport_errors()
        delivered = 0
        pending = b""  # the rest of a burst, decoded a slice at a time
        try:
            while True:
                if pending:
                    data, pending = pending[:_MAX_FEED], pending[_MAX_FEED:]
                else:
                    self.wait_since = loop.time()
                    try:
                        data = await read(content, loop)
                    except errors as exc:
                        raise transport_error(
                            exc, self.config, self.method, self.url, reading=True
                        ) from exc
                    self.wait_since = None
                    if len(data) > _MAX_FEED:
                        data, pending = data[:_MAX_FEED], data[_MAX_FEED:]
                items = decoder.feed(data)
                if not self.got_first and decoder.chunks:
                    self.got_first = True  # the idle deadline applies from now on
                    if on_first is not None and (waiting := on_first()) is not None:
                        await waiting
                for item in items:
                    delivered += 1
                    yield item
                if decoder.failure is not None:
                    raise self._failure(decoder.failure)
                if decoder.done:
                    self.ended_at = loop.time()
                    if data:
                        await self._drain()
                    if on_end is not None and (waiting := on_end(decoder)) is not None:
                        await waiting
                    return
        except LLMError as error:
            await self._failed(error, delivered, on_failure)
        finally:
            self._closed(on_close)

    @staticmethod
    async def _failed(error: LLMError, delivered: int, on_failure: OnFailure | None) -> NoReturn:
        """Raise what a reader's failure becomes: what ``on_failure`` makes of it (with the
        failure as its cause), or the failure itself."""
        if on_failure is not None:
            replacement = await on_failure(error, delivered)
            if replacement is not error:
                raise replacement from error
        raise error

    def _closed(self, on_close: OnClose | None) -> None:
        """A reader has ended: close the exchange, and say so."""
        self.close()
        if on_close is not None:
            on_close()

    def _failure(self, failure: LLMError | ErrorInfo) -> LLMError:
        if isinstance(failure, ErrorInfo):
            return self._server_error(failure)
        if failure.request_id is None:
            failure.request_id = self.request_id
        return failure

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
