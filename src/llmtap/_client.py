"""``LLMClient``: the connection pool, the retry loop, and the calls users make.

Data flows one way: response bytes → decoder (SSE or NDJSON) → chunk dicts → accumulator →
events and a ``ChatResult``. The retry loop wraps everything that happens before the first chunk
reaches the caller; after that nothing is retried, because the caller would see it twice.
"""

from __future__ import annotations

import asyncio
import base64
import math
import ssl
import struct
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Iterable,
    Mapping,
    Sequence,
)
from typing import TYPE_CHECKING, Any, Self

import orjson

from llmtap import _retry
from llmtap._accumulate import Accumulator
from llmtap._config import LLMConfig
from llmtap._dialects import Dialect, MessageLike, build_payload, guess_server
from llmtap._errors import (
    LLMError,
    LLMResponseError,
    LLMUsageError,
    register_secret,
    scrub,
)
from llmtap._log import get_logger
from llmtap._messages import check_messages
from llmtap._preflight import PreflightReport, ServerKind, canonical_ollama_name, run_preflight
from llmtap._results import ChatResult, Timings, trusted
from llmtap._stream import ChatStream, ClientStream
from llmtap._transport import (
    ChunkSink,
    Exchange,
    timeout_error,
    transport_error,
    transport_errors,
)

if TYPE_CHECKING:
    import aiohttp

    from llmtap._models import ModelDetails, ModelInfo, PullProgress
    from llmtap._parse import OutputT
    from llmtap._toolloop import ToolEventHandler, ToolRun

__all__ = ["LLMClient"]

_log = get_logger()

_USER_AGENT = "llmtap/0.1.0"


class ChatRequest:
    """One chat request as sent (and re-sent on retries): dialect, URL and encoded body.

    Only the encoded body is kept (one bytes object, not the payload's dicts and lists, which
    a thousand concurrent streams would otherwise hold); :attr:`payload` decodes it again for
    the rare uses that need it.
    """

    __slots__ = ("body", "dialect", "model", "options", "url")

    def __init__(self, dialect: Dialect, url: str, payload: dict[str, Any]) -> None:
        self.dialect = dialect
        self.url = url
        #: The model the request names.
        self.model = str(payload.get("model", ""))
        #: Ollama's ``options`` as sent (``num_ctx``, ...), if any.
        self.options: Any = payload.get("options")
        self.body = orjson.dumps(payload)

    @property
    def payload(self) -> dict[str, Any]:
        """A fresh copy of the payload, decoded from the body."""
        payload: dict[str, Any] = orjson.loads(self.body)
        return payload

    def drop_rejected_stream_options(self, error: LLMError) -> bool:
        """After a 400 naming ``stream_options`` (an older server), drop it; ``True`` if so."""
        if not (
            isinstance(error, LLMResponseError)
            and error.status_code == 400
            and "stream_options" in (error.server_message or "")
        ):
            return False
        payload = self.payload
        if "stream_options" not in payload:
            return False
        del payload["stream_options"]
        self.body = orjson.dumps(payload)
        return True

    def continuation(self, partial_text: str, server: ServerKind | None) -> ChatRequest:
        """The request that continues ``partial_text`` as the assistant's own unfinished
        message (a prefill), so the server sends only what follows it."""
        payload = self.payload
        payload["messages"].append({"role": "assistant", "content": partial_text})
        if server == "vllm":
            payload["continue_final_message"] = True
            payload["add_generation_prompt"] = False
        return ChatRequest(self.dialect, self.url, payload)


class _Expiry:
    """A deadline for the current task: at ``when`` it cancels the task, and :meth:`took`
    then tells that cancellation apart from any other (as ``asyncio.timeout_at`` does)."""

    __slots__ = ("_cancelling", "_handle", "_task", "expired")

    def __init__(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        task = asyncio.current_task()
        if task is None:
            raise LLMUsageError("llmtap must be used from inside an asyncio task")
        self._task = task
        self._cancelling = task.cancelling()
        self.expired = False
        self._handle = loop.call_at(when, self._expire)

    def _expire(self) -> None:
        self.expired = True
        self._task.cancel()

    def took(self, exc: asyncio.CancelledError) -> bool:
        """Whether ``exc`` is this deadline's own cancellation (and no one else's); if so, the
        task's cancellation request is withdrawn."""
        return self.expired and self._task.uncancel() <= self._cancelling

    def cancel(self) -> None:
        self._handle.cancel()


class Attempt:
    """One streaming attempt, as an async context manager: entering sends the request and
    gives the body's reader (chunk dicts, or what ``sink`` makes of them; see
    :meth:`Exchange.read_chunks`); leaving closes the reader and the exchange.

    What is given is the reader itself, not a generator around it: every layer an
    ``async for`` passes through costs CPU per token. (A class rather than
    ``@asynccontextmanager``: two objects fewer per stream, which a thousand concurrent
    streams feel in garbage collection.)
    """

    __slots__ = ("_chunks", "_client", "_interrupted", "_request", "_sink", "_total_at", "exchange")

    def __init__(
        self,
        client: LLMClient,
        request: ChatRequest,
        total_at: float,
        sink: ChunkSink | None = None,
        interrupted: bool = False,
    ) -> None:
        self._client = client
        self._request = request
        self._total_at = total_at
        self._sink = sink
        self._interrupted = interrupted
        #: The exchange, once the response has begun.
        self.exchange: Exchange | None = None
        self._chunks: AsyncGenerator[Any, None] | None = None

    async def __aenter__(self) -> AsyncGenerator[Any, None]:
        request = self._request
        self.exchange = exchange = await self._client._send(
            "POST", request.url, request.body, total_at=self._total_at
        )
        self._chunks = chunks = exchange.read_chunks(sink=self._sink, interrupted=self._interrupted)
        return chunks

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            if self._chunks is not None:
                await self._chunks.aclose()
        finally:
            if self.exchange is not None:
                self.exchange.close()


class ChunkStream:
    """What :meth:`LLMClient.stream_chat` gives: the answer's chunk dicts, as an async
    iterator (and an async context manager that closes it).

    The first ``__anext__`` sends the request, retrying before any output; every later one
    hands back the body reader's own ``__anext__``, so that a chunk passes through no
    generator but the reader (every ``async for`` layer costs CPU per token). The reader
    turns a failure after output into :class:`LLMStreamInterrupted` itself.
    """

    __slots__ = ("_attempt", "_client", "_closed", "_max_retries", "_reader", "_request")

    def __init__(self, client: LLMClient, request: ChatRequest, max_retries: int) -> None:
        self._client = client
        self._request = request
        self._max_retries = max_retries
        self._attempt: Attempt | None = None
        self._reader: AsyncGenerator[dict[str, Any], None] | None = None
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[dict[str, Any]]:
        reader = self._reader
        if reader is not None:
            return reader.__anext__()
        return self._first()

    async def _first(self) -> dict[str, Any]:
        """Send the request (retrying failures, all of which came before any output) and
        give the first chunk; from then on the reader serves ``__anext__``."""
        if self._closed:
            raise StopAsyncIteration
        client = self._client
        request = self._request
        retries = client._retries(
            request.url, total_at=client._total_deadline(), max_retries=self._max_retries
        )
        while True:
            attempt = Attempt(client, request, retries.total_at, interrupted=True)
            try:
                reader = await attempt.__aenter__()
                try:
                    chunk: dict[str, Any] = await reader.__anext__()
                except BaseException:
                    await attempt.__aexit__()
                    raise
            except LLMError as error:
                if request.drop_rejected_stream_options(error):
                    client._no_stream_options.add(request.url)
                    continue
                await retries.wait_or_raise(error)
                continue
            self._attempt, self._reader = attempt, reader
            return chunk

    async def aclose(self) -> None:
        """Stop reading and give the connection back. Safe to call more than once."""
        self._closed = True
        self._reader = None
        attempt, self._attempt = self._attempt, None
        if attempt is not None:
            await attempt.__aexit__()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class LLMClient:
    """Async streaming client for Ollama and every OpenAI-compatible server.

    Args:
        config: Where and how to connect; ``LLMConfig()`` (environment, then defaults) if omitted.
        **overrides: Fields of :class:`LLMConfig` to set, when ``config`` is not given.

    Example:
        >>> async def main() -> None:
        ...     async with LLMClient(model="qwen3") as client:
        ...         await client.preflight_check()
        ...         result = await client.chat([Message.user("Hi")])
        ...         print(result.text, result.usage)
    """

    def __init__(self, config: LLMConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = LLMConfig(**overrides)
        elif overrides:
            raise TypeError("pass either an LLMConfig or keyword overrides, not both")
        self._config = config
        if config.api_key is not None:
            register_secret(config.api_key.get_secret_value())
        self._model = config.model
        self._server: ServerKind | None = None
        self._session: aiohttp.ClientSession | None = None
        self._closed = False
        #: Chat URLs that answered 400 to ``stream_options``: never sent it again.
        self._no_stream_options: set[str] = set()

    def __repr__(self) -> str:
        return f"LLMClient(endpoint={scrub(self._config.endpoint)!r}, model={self._model!r})"

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
        return len(getattr(self._session.connector, "_acquired", ()))

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
        if isinstance(config.client_cert, str):
            context.load_cert_chain(config.client_cert)
        elif config.client_cert is not None:
            context.load_cert_chain(*config.client_cert)
        return context

    def _get_session(self) -> aiohttp.ClientSession:
        import aiohttp  # here, not at import: `import llmtap` stays fast

        from llmtap._connector import Connector

        if self._closed:
            raise LLMUsageError("this LLMClient is closed; create a new one")
        if self._session is None:
            config = self._config
            headers = {"User-Agent": _USER_AGENT, **config.headers}
            if config.api_key is not None:
                headers["Authorization"] = f"Bearer {config.api_key.get_secret_value()}"
            self._session = aiohttp.ClientSession(
                connector=Connector(
                    limit=config.max_connections, limit_per_host=0, ssl=self._ssl()
                ),
                headers=headers,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=None, sock_connect=config.connect_timeout
                ),
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

    # --- one HTTP exchange ----------------------------------------------------------------

    async def _send(
        self, method: str, url: str, body: bytes | None, *, total_at: float = math.inf
    ) -> Exchange:
        """Send a request and wait for its headers; a status of 300 or more raises.

        The headers must arrive by ``first_token_timeout`` (or ``total_at``, if sooner).
        """
        config = self._config
        session = self._get_session()
        loop = asyncio.get_running_loop()
        first_token_at = loop.time() + config.first_token_timeout
        deadline = min(first_token_at, total_at)
        headers = {"Content-Type": "application/json"} if body is not None else None
        # The headers' deadline: a bare timer that cancels this task (asyncio.timeout_at does
        # the same with several times the bookkeeping, paid on every request).
        expiry = _Expiry(loop, deadline)
        try:
            response = await self._request_once_more_if_stale(session, method, url, body, headers)
        except asyncio.CancelledError as exc:
            if not expiry.took(exc):
                raise
            if total_at < first_token_at:
                raise timeout_error("total", config.total_timeout or 0.0, method, url) from None
            raise timeout_error("first_token", config.first_token_timeout, method, url) from None
        except transport_errors(TimeoutError) as exc:  # aiohttp's connect timeouts included
            raise transport_error(exc, config, method, url, reading=False) from exc
        finally:
            expiry.cancel()
        exchange = Exchange(config, response, method, url, first_token_at, total_at)
        if response.status >= 300:
            raise await exchange.status_error()
        return exchange

    async def _request_once_more_if_stale(
        self,
        session: aiohttp.ClientSession,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str] | None,
    ) -> aiohttp.ClientResponse:
        """``session.request``, sent once more on a fresh connection when it met a kept-alive
        one that the server had already closed (llama-cpp-python closes one ~4 ms after an
        empty 200). The request never reached a live server then, so this is not a retry."""
        import aiohttp

        for fresh in (False, True):
            # A request can only meet a stale connection if an idle one was in the pool.
            # (aiohttp's tracing would tell exactly, at ~30 µs per request: too dear.)
            pooled = bool(getattr(session.connector, "_conns", None))
            try:
                return await session.request(
                    method, url, data=body, headers=headers, allow_redirects=False
                )
            except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
                if fresh or not pooled or isinstance(exc, aiohttp.ClientConnectorError):
                    raise
                _log.debug("stale_connection", url=url, error=type(exc).__name__)
        raise AssertionError("unreachable")

    def _attempt(
        self,
        request: ChatRequest,
        total_at: float,
        sink: ChunkSink | None = None,
        *,
        interrupted: bool = False,
    ) -> Attempt:
        """One streaming attempt: ``async with client._attempt(...) as chunks`` sends the
        request and gives the body's reader (or the specific error; no retries)."""
        return Attempt(self, request, total_at, sink, interrupted)

    async def _post_json(
        self, url: str, body: bytes, *, chat: bool, total_at: float = math.inf
    ) -> dict[str, Any]:
        """One non-streaming attempt: ``body`` (encoded JSON) sent, the whole JSON answer
        returned. No retries."""
        exchange = await self._send("POST", url, body, total_at=total_at)
        try:
            return await exchange.read_json(chat=chat)
        finally:
            exchange.close()

    async def _get_json(self, url: str) -> tuple[int, Any, Mapping[str, str]]:
        """``GET url``: status, parsed JSON (``None`` if the body is not JSON), headers.

        Used by preflight and listing calls; statuses are returned, not raised. A body
        larger than ``max_line_bytes`` raises ``LLMResponseError`` without being read whole.
        """
        session = self._get_session()
        limit = self._config.max_line_bytes
        try:
            async with session.get(url, allow_redirects=False) as response:
                raw = bytearray()
                while piece := await response.content.readany():
                    raw += piece
                    if len(raw) > limit:
                        raise LLMResponseError(
                            f"{url} answered with more than max_line_bytes ({limit} bytes); "
                            "is this an LLM API?",
                            response.status,
                            method="GET",
                            url=url,
                        )
        except transport_errors(TimeoutError) as exc:
            raise transport_error(exc, self._config, "GET", url, reading=False) from exc
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError:
            body = None
        return response.status, body, response.headers

    # --- retries --------------------------------------------------------------------------

    def _retry_delay(
        self, error: LLMError, attempt: int, max_retries: int, total_at: float
    ) -> float | None:
        """Seconds to wait before retrying after ``error`` (raised before any output), or
        ``None`` when it must be raised: not retryable, retries used up, the server asked to
        wait longer than 120 s, or the wait would pass ``total_timeout``."""
        if attempt >= max_retries or not _retry.is_retryable(error):
            return None
        retry_after = error.retry_after if isinstance(error, LLMResponseError) else None
        if retry_after is not None and retry_after > _retry.MAX_RETRY_AFTER:
            return None
        if not _retry.waits_enabled():
            wait = 0.0
        elif retry_after is not None:
            wait = retry_after
        else:
            config = self._config
            wait = _retry.backoff(attempt, config.retry_backoff_base, config.retry_backoff_max)
        if asyncio.get_running_loop().time() + wait >= total_at:
            return None
        return wait

    async def _pause_before_retry(
        self,
        error: LLMError,
        attempt: int,
        max_retries: int,
        wait: float,
        url: str,
        *,
        event: str = "llm_retry",
    ) -> None:
        """Log the retry (one ``llm_retry`` event, or ``llm_resume``) and wait."""
        _log.warning(
            event,
            attempt=attempt,
            max_retries=max_retries,
            wait=round(wait, 3),
            error=f"{type(error).__name__}: {error.message}",
            url=url,
        )
        if wait > 0:
            await asyncio.sleep(wait)

    def _retries(self, url: str, *, total_at: float, max_retries: int | None = None) -> Retries:
        """The retry bookkeeping of one call to ``url``."""
        limit = self._config.max_retries if max_retries is None else max_retries
        return Retries(self, limit, total_at, url)

    def _total_deadline(self) -> float:
        """Loop time by which a call started now must end (``math.inf`` without one)."""
        total = self._config.total_timeout
        return math.inf if total is None else asyncio.get_running_loop().time() + total

    # --- requests -------------------------------------------------------------------------

    def _dialect(self) -> Dialect:
        api = self._config.api
        return (
            "ollama"
            if api == "ollama" or (api == "auto" and self._server == "ollama")
            else "openai"
        )

    def _request(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None,
        params: Mapping[str, Any],
        *,
        stream: bool,
    ) -> ChatRequest:
        dialect = self._dialect()
        url = self._config.url_for("/api/chat") if dialect == "ollama" else self._config.chat_url
        params = dict(params)
        model = params.pop("model", None) or self._model
        if not model:
            raise LLMUsageError(
                "no model is set: pass LLMConfig(model=...) or LLMTAP_MODEL, or run "
                "preflight_check() to pick the server's only model"
            )
        messages = check_messages(messages)
        if not messages:
            raise LLMUsageError("messages is empty: send at least one message")
        config = self._config
        payload = build_payload(
            dialect,
            model=model,
            messages=messages,
            tools=[_tool_schema(tool) for tool in tools] if tools else None,
            temperature=config.temperature,
            max_tokens=config.max_tokens,
            stream=stream,
            include_usage=url not in self._no_stream_options,
            params=params,
        )
        return ChatRequest(dialect, url, payload)

    def stream_chat(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        **params: Any,
    ) -> ChunkStream:
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
        return ChunkStream(self, self._request(messages, tools, params, stream=True), 0)

    def stream_chat_with_retry(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        **params: Any,
    ) -> ChunkStream:
        """Like :meth:`stream_chat`, retrying transient failures before any output.

        Connection failures, timeouts and statuses 408, 409, 429, 500, 502, 503 and 504 are
        retried up to ``max_retries`` times with exponential backoff and full jitter, waiting as
        the server asks (``Retry-After``, ``retry-after-ms``) up to 120 s. Once a chunk has been
        yielded, nothing is retried: a later failure raises :class:`LLMStreamInterrupted`
        carrying the partial text, so the caller never sees a token twice.
        """
        request = self._request(messages, tools, params, stream=True)
        return ChunkStream(self, request, self._config.max_retries)

    def stream(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        *,
        resume: bool = False,
        **params: Any,
    ) -> ChatStream:
        """Stream one answer as typed events, then give the whole ``ChatResult``.

        Use as ``async with client.stream(messages) as stream:`` and iterate the stream for
        events (``TextDelta``, ``ReasoningDelta``, ``ToolCallDelta``, ``UsageEvent``,
        ``FinishEvent``), or ``stream.text()`` for text only; ``await stream.result()`` gives
        the ``ChatResult``, also after a partial iteration. Failures before the first event
        are retried as in :meth:`stream_chat_with_retry`.

        Args:
            messages: The conversation.
            tools: Tool schemas (dicts) or objects with ``to_schema()``.
            resume: When the stream breaks after text has been delivered, ask the server to
                continue the partial answer (an assistant prefill) instead of raising, at
                most ``max_retries`` times. Only on servers known to continue a final
                assistant message (Ollama, llama.cpp, vLLM) and never once tool calls began.
            **params: Passed through into the request body.
        """
        request = self._request(messages, tools, params, stream=True)
        return ClientStream(self, request, resume=resume)

    async def chat(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        *,
        stream: bool = True,
        resume: bool = False,
        **params: Any,
    ) -> ChatResult:
        """Ask once and get the whole answer as a ``ChatResult``.

        Nothing reaches the caller before the result, so any failure, even mid-stream, is
        retried as a fresh request under the retry rules (up to ``max_retries``).

        Args:
            messages: The conversation.
            tools: Tool schemas (dicts) or objects with ``to_schema()``.
            stream: Stream the answer (the default; deadlines then apply per chunk) or use
                the non-streaming endpoint (the whole answer within ``first_token_timeout``).
            resume: For ``stream=True``: continue a broken answer rather than restart it,
                where the server can (see :meth:`stream`).
            **params: Passed through into the request body.
        """
        if stream:
            request = self._request(messages, tools, params, stream=True)
            return await ClientStream(self, request, resume=resume, exposed=False).result()
        request = self._request(messages, tools, params, stream=False)
        retries = self._retries(request.url, total_at=self._total_deadline())
        while True:
            try:
                return await self._complete(request, retries.total_at)
            except LLMError as error:
                await retries.wait_or_raise(error)

    async def _complete(self, request: ChatRequest, total_at: float) -> ChatResult:
        """One non-streaming attempt: the whole answer as a ``ChatResult``. No retries."""
        started = asyncio.get_running_loop().time()
        body = await self._post_json(request.url, request.body, chat=True, total_at=total_at)
        accumulator = Accumulator(request.dialect)
        accumulator.feed_completion(body)
        guessed = guess_server(request.dialect, body)
        return await self._finish(accumulator, request, started, None, guessed)

    async def _finish(
        self,
        accumulator: Accumulator,
        request: ChatRequest,
        started: float,
        first_at: float | None,
        guessed: ServerKind | None,
        ended: float | None = None,
    ) -> ChatResult:
        """Build the ``ChatResult``: timings, server kind, and Ollama's truncation warning.
        ``ended``: when the answer had been read (default: now)."""
        if ended is None:
            ended = asyncio.get_running_loop().time()
        metrics = accumulator.ollama_metrics
        tokens_per_second: float | None = None  # else the accumulator's, from the usage
        if metrics.get("eval_count") and metrics.get("eval_duration"):
            tokens_per_second = metrics["eval_count"] / (metrics["eval_duration"] / 1e9)
        load = metrics.get("load_duration")
        timings = trusted(
            Timings,
            time_to_first_token=None if first_at is None else first_at - started,
            total=ended - started,
            tokens_per_second=tokens_per_second,
            load_duration=None if load is None else load / 1e9,
        )
        server = self._server or guessed or guess_server(request.dialect, None)
        warnings = []
        if request.dialect == "ollama":
            warning = await self._truncation_warning(request, metrics.get("prompt_eval_count"))
            if warning:
                warnings.append(warning)
        return accumulator.result(server=server, timings=timings, warnings=warnings)

    async def _truncation_warning(self, request: ChatRequest, prompt_tokens: int | None) -> str:
        """Ollama drops old messages without a word when the prompt exceeds the context in
        use; when the prompt filled that context, say so."""
        if not prompt_tokens:
            return ""
        options = request.options or {}
        context = options.get("num_ctx")
        if not isinstance(context, int):
            context = await self._running_context_length(request.model)
        if context is None or prompt_tokens < context:
            return ""
        _log.warning(
            "ollama_prompt_truncated",
            model=request.model,
            prompt_tokens=prompt_tokens,
            context=context,
        )
        return (
            f"The prompt filled the whole context ({prompt_tokens} of {context} tokens): "
            "Ollama dropped the oldest messages to fit. Pass num_ctx=<larger> to keep them"
        )

    async def _running_context_length(self, model: str) -> int | None:
        """The context size Ollama runs ``model`` with now (``/api/ps``), if it is loaded."""
        url = self._config.url_for("/api/ps")
        try:
            async with asyncio.timeout(self._config.preflight_timeout):
                status, body, _ = await self._get_json(url)
        except (LLMError, TimeoutError):
            return None
        if status != 200 or not isinstance(body, dict):
            return None
        wanted = canonical_ollama_name(model)
        for entry in body.get("models") or ():
            if not isinstance(entry, dict):
                continue
            names = {entry.get("name"), entry.get("model")}
            if any(isinstance(n, str) and canonical_ollama_name(n) == wanted for n in names):
                length = entry.get("context_length")
                return length if isinstance(length, int) else None
        return None

    # --- tools and structured output ------------------------------------------------------

    async def run_tools(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any],
        *,
        max_rounds: int = 8,
        on_event: ToolEventHandler | None = None,
        stream: bool = False,
        **params: Any,
    ) -> ToolRun:
        """Let the model call Python functions until it answers: the tool loop.

        Each round sends the conversation (``chat()``); when the answer calls tools, their
        arguments are checked against the functions' signatures, the calls run concurrently
        (async functions on the loop, sync ones in worker threads), and the assistant message
        plus one ``tool`` message per call (same ``tool_call_id``) join the conversation for
        the next round. An unknown tool, invalid arguments or an exception inside a tool is
        reported to the model in the ``tool`` message (and logged), and the loop goes on.

        Args:
            messages: The conversation so far.
            tools: Functions (sync or async) or :class:`Tool` objects.
            max_rounds: Most requests to make; still calling tools after that raises.
            on_event: Called (or awaited) with a :class:`ToolCallStarted` before each call
                and a :class:`ToolCallFinished` after it, and with ``stream=True`` with each
                :class:`TextDelta` of every round's answer.
            stream: Stream each round's answer (:meth:`stream`) so that ``on_event`` sees its
                text as it comes; a failure mid-answer then raises instead of starting over.
            **params: Passed to every request (``tool_choice``, ``temperature``, ...).

        Returns:
            The final answer and the whole transcript.

        Raises:
            LLMToolLoopError: The model still called tools after ``max_rounds`` rounds; the
                transcript is on the error.
            LLMUsageError: ``tools`` holds something that is not a function, or two tools
                share a name.
            LLMError: As :meth:`chat` raises.

        Example:
            >>> async def get_weather(city: str) -> str:
            ...     '''The weather in a city.'''
            ...     return "sunny"
            >>> run = await client.run_tools([Message.user("Weather in Paris?")], [get_weather])
            >>> run.result.text
            'It is sunny in Paris.'
        """
        from llmtap._toolloop import run_tools

        return await run_tools(
            self,
            messages,
            tools,
            max_rounds=max_rounds,
            on_event=on_event,
            stream=stream,
            **params,
        )

    async def parse(
        self,
        messages: Iterable[MessageLike],
        output_type: type[OutputT],
        *,
        repair_rounds: int = 1,
        **params: Any,
    ) -> OutputT:
        """Ask for an answer shaped as ``output_type`` and get it validated.

        The type's JSON schema is sent as ``response_format`` (``json_schema``, ``strict``
        when every object in it lists all its properties as required and forbids others; on
        Ollama's native API it becomes ``format``). The reply is validated with pydantic (JSON
        wrapped in a Markdown code fence is unwrapped); when it does not fit, a repair round
        shows the model its reply and the errors and asks again.

        Args:
            messages: The conversation.
            output_type: A pydantic model, dataclass, TypedDict, or any type pydantic's
                ``TypeAdapter`` accepts (``list[int]``, ...).
            repair_rounds: How many times to ask again after an invalid reply (0: never).
            **params: Passed to every request (not ``response_format``).

        Returns:
            The validated value.

        Raises:
            LLMParseError: No reply validated; ``.raw_text`` is the last one, ``.errors``
                its validation errors.
            LLMUsageError: pydantic cannot describe ``output_type``.
            LLMError: As :meth:`chat` raises.

        Example:
            >>> class City(BaseModel):
            ...     name: str
            ...     population: int
            >>> city = await client.parse([Message.user("The biggest city in France?")], City)
            >>> city.name
            'Paris'
        """
        from llmtap._parse import parse

        return await parse(self, messages, output_type, repair_rounds=repair_rounds, **params)

    # --- embeddings -----------------------------------------------------------------------

    async def embed(
        self, texts: str | Sequence[str], *, model: str | None = None, **params: Any
    ) -> list[list[float]]:
        """Embed texts: one vector per text, in order.

        Uses Ollama's ``/api/embed`` on Ollama (found by preflight, or ``api="ollama"``) and
        ``/v1/embeddings`` elsewhere, in requests of at most ``embed_batch_size`` texts, each
        retried under the usual rules.

        Args:
            texts: One text or several.
            model: The embedding model; defaults to the client's model.
            **params: Passed through into each request body (``dimensions``, ``truncate``...).
        """
        items = [texts] if isinstance(texts, str) else list(texts)
        name = model or self._model
        if not name:
            raise LLMUsageError("no embedding model is set: pass model=... to embed()")
        native = self._config.api == "ollama" or self._server == "ollama"
        url = self._config.url_for("/api/embed" if native else "/v1/embeddings")
        size = self._config.embed_batch_size
        vectors: list[list[float]] = []
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            body = await self._post_json_with_retry(url, {"model": name, "input": batch, **params})
            vectors.extend(_read_embeddings(body, len(batch), native, url))
        return vectors

    async def _post_json_with_retry(self, url: str, payload: dict[str, Any]) -> dict[str, Any]:
        retries = self._retries(url, total_at=self._total_deadline())
        body = orjson.dumps(payload)
        while True:
            try:
                return await self._post_json(url, body, chat=False, total_at=retries.total_at)
            except LLMError as error:
                await retries.wait_or_raise(error)

    # --- model management -----------------------------------------------------------------

    async def list_models(self) -> list[ModelInfo]:
        """The models the server has, with what it tells about each.

        Ollama: ``/api/tags`` (size, parameters, quantization, modified) joined with
        ``/api/ps`` (``loaded``, and the context length it runs with). Other servers:
        ``/v1/models`` (llama.cpp adds size, parameters and context; vLLM the context).

        Raises:
            LLMConnectionError: Nothing answers at the endpoint.
            LLMResponseError: The server refused the credentials or is not an LLM API.
        """
        from llmtap import _models

        return await _models.list_models(self)

    async def loaded_models(self) -> list[ModelInfo]:
        """The models Ollama holds in memory now (``/api/ps``).

        Raises:
            LLMUsageError: The server is not Ollama.
        """
        from llmtap import _models

        return await _models.loaded_models(self)

    async def show(self, model: str) -> ModelDetails:
        """Details of one Ollama model (``/api/show``): family, parameters, context length,
        capabilities, and the whole answer as ``raw``.

        Raises:
            LLMResponseError: The model is not on the server (404, with the ``ollama pull``
                fix).
            LLMUsageError: The server is not Ollama.
        """
        from llmtap import _models

        return await _models.show(self, model)

    def pull(self, model: str, *, insecure: bool = False) -> AsyncIterator[PullProgress]:
        """Download ``model`` into Ollama (``/api/pull``), yielding its progress lines.

        The last event has ``status == "success"``. Pulling again after a failure resumes:
        Ollama keeps the layers, and the parts of layers, it already has.

        Example:
            >>> async for event in client.pull("llama3.2"):
            ...     print(event.status, event.completed, event.total)

        Raises:
            LLMResponseError: The model is not in the registry (404), or Ollama reported
                another error.
            LLMStreamError: The progress stream ended before ``success``.
            LLMUsageError: The server is not Ollama.
        """
        from llmtap import _models

        return _models.pull(self, model, insecure=insecure)

    # --- preflight ------------------------------------------------------------------------

    async def preflight_check(self) -> PreflightReport:
        """Check that the server is up and has the model; pick the model if none is set.

        Works against Ollama (``/api/tags``) and OpenAI-compatible servers (``/v1/models``:
        llama.cpp, vLLM, LM Studio, OpenAI). The whole check is bounded by
        ``preflight_timeout``. Afterwards the client uses the resolved model name, and with
        ``api="auto"`` Ollama's native API when the server is Ollama.

        Raises:
            LLMConnectionError: Nothing answers at the endpoint (``LLMTimeoutError`` if the
                check ran past ``preflight_timeout``).
            LLMResponseError: The server refused (auth), is still loading, has no such model,
                or is not an LLM API at that URL.
            LLMUsageError: No model is set and the server has several.
        """
        report = await run_preflight(self._config, self._model, self._get_json)
        self._server = report.server
        self._model = report.model
        return report


class Retries:
    """The retries of one call: how many so far, within which limits."""

    __slots__ = ("_client", "attempt", "max_retries", "total_at", "url")

    def __init__(self, client: LLMClient, max_retries: int, total_at: float, url: str) -> None:
        self._client = client
        self.max_retries = max_retries
        self.total_at = total_at
        self.url = url
        self.attempt = 0

    async def wait_or_raise(self, error: LLMError) -> None:
        """After ``error`` (raised before any output): wait, then let the caller try again;
        or raise ``error`` when it must not be retried."""
        client = self._client
        wait = client._retry_delay(error, self.attempt, self.max_retries, self.total_at)
        if wait is None:
            raise error
        self.attempt += 1
        await client._pause_before_retry(error, self.attempt, self.max_retries, wait, self.url)


def _tool_schema(tool: Any) -> Mapping[str, Any]:
    """A tool as its OpenAI schema: a mapping as is, or an object's ``to_schema()``."""
    if isinstance(tool, Mapping):
        return tool
    to_schema = getattr(tool, "to_schema", None)
    if callable(to_schema):
        schema = to_schema()
        if isinstance(schema, Mapping):
            return schema
    raise LLMUsageError(
        f"tools must be schema dicts or objects with to_schema(), not {type(tool).__name__}"
    )


def _read_embeddings(body: dict[str, Any], count: int, native: bool, url: str) -> list[list[float]]:
    """The vectors of one embeddings answer, checked for count."""
    if native:
        vectors = body.get("embeddings")
    else:
        data = body.get("data")
        vectors = None
        if isinstance(data, list):
            ordered = sorted(data, key=lambda item: item.get("index", 0))
            vectors = [_vector(item.get("embedding")) for item in ordered]
    if not isinstance(vectors, list) or len(vectors) != count:
        got = len(vectors) if isinstance(vectors, list) else "no"
        raise LLMResponseError(
            f"The embeddings answer has {got} vectors for {count} texts; is the model an "
            "embedding model?",
            200,
            method="POST",
            url=url,
        )
    return [_vector(vector) for vector in vectors]


def _vector(value: Any) -> list[float]:
    if isinstance(value, str):  # encoding_format="base64": little-endian float32
        raw = base64.b64decode(value)
        return list(struct.unpack(f"<{len(raw) // 4}f", raw))
    if isinstance(value, list):
        return [float(x) for x in value]
    raise LLMResponseError(f"An embedding is neither a list nor base64: {type(value).__name__}")
