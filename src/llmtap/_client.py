"""``LLMClient``: one endpoint, and the calls users make.

Data flows one way: response bytes → decoder (SSE or NDJSON) → chunk dicts → accumulator →
events and a ``ChatResult``. Every call goes through the attempt loop (``llmtap._call``),
which retries what came before the first chunk reached the caller; after that nothing is
retried, because the caller would see it twice. The client itself holds its endpoint
(``llmtap._upstream.Upstream``: settings, connections, what was learned of the server) and
turns each call into a :class:`~llmtap._call.Call`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Self, TypeVar, overload

from llmtap import _models
from llmtap._call import Call, Direct
from llmtap._config import LLMConfig
from llmtap._errors import scrub
from llmtap._hooks import Hooks
from llmtap._messages import check_messages
from llmtap._parse import parse as _parse
from llmtap._results import (
    ChatResult,
    ModelDetails,
    ModelInfo,
    PreflightReport,
    PullProgress,
    ServerKind,
)
from llmtap._stream import CachedStream, ChatStream, ChunkStream, RequestFor, whole_answer
from llmtap._toolloop import ToolEventHandler, ToolRun, run_tools
from llmtap._upstream import Upstream
from llmtap._wire.dialects import MessageLike
from llmtap._wire.request import ChatRequest

if TYPE_CHECKING:
    from llmtap._hooks import Operation
    from llmtap._store import Cache, Flight, LogHook

__all__ = ["LLMClient", "client_for", "upstream_of"]

_T = TypeVar("_T")


class LLMClient:
    """Async streaming client for Ollama and every OpenAI-compatible server.

    Args:
        config: Where and how to connect; ``LLMConfig()`` (environment, then defaults) if omitted.
        **overrides: Fields of :class:`LLMConfig` to set, when ``config`` is not given.

    Example:
        >>> import asyncio
        >>> async def main() -> None:
        ...     async with LLMClient(model="qwen3") as client:
        ...         await client.preflight_check()
        ...         result = await client.chat([Message.user("Hi")])
        ...         print(result.text, result.usage)
        >>> asyncio.run(main())
        Hello! prompt_tokens=9 completion_tokens=3 total_tokens=12 source='server'
    """

    __slots__ = ("_cache", "_hooks", "_log", "_route", "_upstream")

    def __init__(self, config: LLMConfig | None = None, **overrides: Any) -> None:
        if config is None:
            config = LLMConfig(**overrides)
        elif overrides:
            raise TypeError("pass either an LLMConfig or keyword overrides, not both")
        self._bind(Upstream(config))

    def _bind(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._route = Direct(upstream)
        config = upstream.config
        hooks = list(config.hooks)
        self._log: LogHook | None = None
        self._cache: Cache | None = None
        if config.log_path is not None or config.cache_path is not None:
            self._open_store(config)
        if self._log is not None:
            hooks.append(self._log)
        self._hooks = Hooks(hooks) if hooks else None

    def _open_store(self, config: LLMConfig) -> None:
        """Open the conversation log and the response cache the config names (``sqlite3``
        is imported only by clients that use one)."""
        from llmtap._store import Cache, LogHook

        log = config.log_path
        if log is not None:
            self._log = LogHook(log)
        cache = config.cache_path
        if cache is not None:
            self._cache = Cache(
                cache, ttl=config.cache_ttl, nondeterministic=config.cache_nondeterministic
            )

    def __repr__(self) -> str:
        config = self._upstream.config
        return f"LLMClient(endpoint={scrub(config.endpoint)!r}, model={self.model!r})"

    @property
    def config(self) -> LLMConfig:
        """The configuration this client was built with."""
        return self._upstream.config

    @property
    def model(self) -> str:
        """The model requests use (after preflight, the resolved name)."""
        return self._upstream.model

    @property
    def server(self) -> ServerKind | None:
        """The server kind found by preflight, or ``None`` before it ran."""
        return self._upstream.server

    @property
    def connections_in_use(self) -> int:
        """Connections checked out of the pool right now (0 when every stream has ended)."""
        return self._upstream.connections_in_use

    # --- lifecycle ------------------------------------------------------------------------

    async def close(self) -> None:
        """Close the connection pool, and write what the log and the cache still hold. The
        client cannot be used afterwards."""
        await self._upstream.close()
        if self._log is not None:
            await asyncio.to_thread(self._log.flush)
        if self._cache is not None:
            await asyncio.to_thread(self._cache.flush)
            self._cache.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # --- calls ----------------------------------------------------------------------------

    def _call(
        self,
        *,
        max_retries: int | None = None,
        exposed: bool = True,
        resume: bool = False,
        stream: bool = True,
        operation: Operation = "chat",
        model: str | None = None,
    ) -> Call:
        """A new call to the endpoint."""
        return Call(
            self._route,
            max_retries=self._upstream.config.max_retries if max_retries is None else max_retries,
            hooks=self._hooks,
            operation=operation,
            model=model,
            stream=stream,
            exposed=exposed,
            resume=resume,
        )

    def _requests(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None,
        params: Mapping[str, Any],
        *,
        stream: bool = True,
    ) -> tuple[RequestFor, ChatRequest]:
        """How a chat call's request is built for a server (again, for a refit or a
        retry), and its first request, built now so that bad input raises here."""
        checked = check_messages(messages)

        def request_for(upstream: Upstream) -> ChatRequest:
            return upstream.chat_request(checked, tools, params, stream=stream)

        return request_for, request_for(self._upstream)

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
        return ChunkStream(self._call(max_retries=0), *self._requests(messages, tools, params))

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
        return ChunkStream(self._call(), *self._requests(messages, tools, params))

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
        request_for, request = self._requests(messages, tools, params)
        call = self._call(resume=resume)
        key = self._cache_key(request)
        if key is None:
            return ChatStream(call, request_for, request)
        return CachedStream(call, request_for, request, lambda: self._look_up(key, request))

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
        request_for, request = self._requests(messages, tools, params, stream=stream)
        call = self._call(exposed=False, resume=resume and stream, stream=stream)
        key = self._cache_key(request)
        if key is None:
            return await whole_answer(call, request_for, request)
        hit, flight = await self._look_up(key, request)
        if flight is None:
            assert hit is not None
            return hit
        try:
            result = await whole_answer(call, request_for, request)
        except BaseException:
            flight.settle(None)
            raise
        flight.settle(result, url=request.url)
        return result

    # --- the response cache ---------------------------------------------------------------

    def _cache_key(self, request: ChatRequest) -> str | None:
        """The request's key in the response cache (``None``: no cache, or not cached)."""
        cache = self._cache
        return None if cache is None else cache.key_for(request.url, request.payload)

    async def _look_up(
        self, key: str, request: ChatRequest
    ) -> tuple[ChatResult | None, Flight | None]:
        """Ask the cache for ``key``: an answer (logged as cached), or the flight of the
        request to send."""
        assert self._cache is not None
        hit, flight = await self._cache.find(key)
        if hit is not None and self._log is not None:
            self._log.log_cached(request.body, request.url, hit)
        return hit, flight

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
            tools: Functions (sync or async), :class:`Tool` objects, or objects with
                ``to_schema()`` and ``call(arguments)`` (run as they are).
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
        return await run_tools(
            self,
            messages,
            tools,
            max_rounds=max_rounds,
            on_event=on_event,
            stream=stream,
            **params,
        )

    @overload
    async def parse(
        self,
        messages: Iterable[MessageLike],
        output_type: type[_T],
        *,
        repair_rounds: int = 1,
        **params: Any,
    ) -> _T: ...

    @overload
    async def parse(
        self,
        messages: Iterable[MessageLike],
        output_type: Any,
        *,
        repair_rounds: int = 1,
        **params: Any,
    ) -> Any: ...

    async def parse(
        self,
        messages: Iterable[MessageLike],
        output_type: Any,
        *,
        repair_rounds: int = 1,
        **params: Any,
    ) -> Any:
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
            >>> from pydantic import BaseModel
            >>> class City(BaseModel):
            ...     name: str
            ...     population: int
            >>> city = await client.parse([Message.user("The biggest city in France?")], City)
            >>> city.name
            'Paris'
        """
        return await _parse(self, messages, output_type, repair_rounds=repair_rounds, **params)

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
        upstream = self._upstream
        upstream.embeddings_request([], params, model=model)  # no model: raise now
        size = upstream.config.embed_batch_size
        vectors: list[list[float]] = []
        for start in range(0, len(items), size):
            batch = items[start : start + size]
            call = self._call(exposed=False, stream=False, operation="embeddings", model=model)
            reader, found = await call.open(
                lambda endpoint, batch=batch: endpoint.embeddings_request(  # type: ignore[misc]
                    batch, params, model=model
                )
            )
            await reader.aclose()
            vectors.extend(found)
        return vectors

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
        return await _models.list_models(self._upstream)

    async def loaded_models(self) -> list[ModelInfo]:
        """The models Ollama holds in memory now (``/api/ps``).

        Raises:
            LLMUsageError: The server is not Ollama.
        """
        return await _models.loaded_models(self._upstream)

    async def show(self, model: str) -> ModelDetails:
        """Details of one Ollama model (``/api/show``): family, parameters, context length,
        capabilities, and the whole answer as ``raw``.

        Raises:
            LLMResponseError: The model is not on the server (404, with the ``ollama pull``
                fix).
            LLMUsageError: The server is not Ollama.
        """
        return await _models.show(self._upstream, model)

    def pull(self, model: str, *, insecure: bool = False) -> AsyncIterator[PullProgress]:
        """Download ``model`` into Ollama (``/api/pull``), yielding its progress lines.

        The last event has ``status == "success"``. Pulling again after a failure resumes:
        Ollama keeps the layers, and the parts of layers, it already has.

        Example:
            >>> async for event in client.pull("llama3.2"):
            ...     print(event.status, event.completed, event.total)
            pulling manifest None None
            pulling 7f1c22a0a83f 0 1387414370
            pulling 7f1c22a0a83f 346853592 1387414370
            ...
            success None None

        Raises:
            LLMResponseError: The model is not in the registry (404), or Ollama reported
                another error.
            LLMStreamError: The progress stream ended before ``success``.
            LLMUsageError: The server is not Ollama.
        """
        return _models.pull(self._upstream, model, insecure=insecure)

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
            LLMModelError: No model is set and the server has several.
        """
        return await self._upstream.preflight()


def client_for(upstream: Upstream) -> LLMClient:
    """An :class:`LLMClient` over an existing endpoint (a router's), sharing its
    connections and what it has learned."""
    client = LLMClient.__new__(LLMClient)
    client._bind(upstream)
    return client


def upstream_of(client: LLMClient) -> Upstream:
    """The endpoint behind ``client``."""
    return client._upstream
