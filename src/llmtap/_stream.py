"""The streams a call gives: :class:`ChunkStream` (chunk dicts as the server sent them) and
:class:`ChatStream` (typed events, then one ``ChatResult``), over the attempt loop of
``llmtap._call``.

Once the first item is out, a stream takes the next ones straight from the body reader: no
generator of its own sits between the server and the caller (each ``async for`` layer costs
CPU per token). Only a stream that may resume a broken answer keeps the loop in between.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterator
from typing import TYPE_CHECKING, Any, Self

import orjson

from llmtap._call import ENDED, Call, Request
from llmtap._errors import LLMError, LLMUsageError
from llmtap._hooks import timings_of
from llmtap._log import get_logger
from llmtap._results import (
    ChatResult,
    FinishEvent,
    ReasoningDelta,
    StreamEvent,
    TextDelta,
    ToolCallDelta,
    UsageEvent,
)
from llmtap._upstream import Upstream
from llmtap._wire.listings import canonical_ollama_name
from llmtap._wire.request import ChatRequest

if TYPE_CHECKING:
    from types import TracebackType

    from llmtap._store import Flight

__all__ = [
    "CachedStream",
    "ChatStream",
    "ChunkStream",
    "RequestFor",
    "RouterStream",
    "build_result",
    "replay",
    "whole_answer",
]

_log = get_logger()

#: Builds a request for a server.
RequestFor = Callable[[Upstream], Request]


class ChunkStream:
    """What ``stream_chat()`` gives: the answer's chunk dicts, as an async iterator (and an
    async context manager that closes it).

    The first ``__anext__`` sends the request, retrying before any output; every later one
    hands back the body reader's own ``__anext__``. A failure after output raises
    :class:`LLMStreamInterrupted`.
    """

    __slots__ = ("_call", "_closed", "_first", "_reader", "_request_for")

    def __init__(self, call: Call, request_for: RequestFor, first: Request | None = None) -> None:
        self._call = call
        self._request_for = request_for
        self._first = first
        self._reader: AsyncGenerator[dict[str, Any], None] | None = None
        self._closed = False

    def __aiter__(self) -> Self:
        return self

    def __anext__(self) -> Awaitable[dict[str, Any]]:
        reader = self._reader
        if reader is not None:
            return reader.__anext__()
        return self._open()

    async def _open(self) -> dict[str, Any]:
        """Send the request (retrying failures before any output) and give the first chunk;
        from then on the reader serves ``__anext__``."""
        if self._closed:
            raise StopAsyncIteration
        self._closed = True  # opened once, whatever happens
        reader, chunk = await self._call.open(
            self._request_for, first=self._first, collect_text=True
        )
        self._reader = reader
        if chunk is ENDED:
            raise StopAsyncIteration
        result: dict[str, Any] = chunk
        return result

    async def aclose(self) -> None:
        """Stop reading and give the connection back. Safe to call more than once."""
        self._closed = True
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


class ChatStream:
    """One streaming answer. Get it from :meth:`LLMClient.stream` (or ``Router.stream``).

    Iterate it once for typed events (``TextDelta``, ``ReasoningDelta``, ``ToolCallDelta``,
    ``UsageEvent``, ``FinishEvent``), or iterate :meth:`text` for the text alone; then
    ``await stream.result()`` for the :class:`ChatResult`. ``result()`` also works without
    iterating, or after stopping part-way: it reads the rest of the answer first.

    Use it as an async context manager so that the connection is given back as soon as the
    block ends, however it ends.

    Example:
        >>> async with client.stream([Message.user("Hi")]) as stream:
        ...     async for piece in stream.text():
        ...         print(piece, end="", flush=True)
        ...     result = await stream.result()
        Hello! How can I help?
        >>> print(result.usage, result.timings)
        prompt_tokens=9 completion_tokens=6 total_tokens=15 source='server' time_to_first_token=...
    """

    __slots__ = ("_call", "_events", "_first", "_iterated", "_reader", "_request_for", "_result")

    def __init__(self, call: Call, request_for: RequestFor, first: Request | None = None) -> None:
        self._call = call
        self._request_for = request_for
        self._first = first
        self._iterated = False
        #: The loop's generator, for a stream that may resume (it stays in between).
        self._events: AsyncGenerator[StreamEvent, None] | None = None
        #: The body reader that serves ``__anext__`` directly, once the first event is out.
        self._reader: AsyncGenerator[StreamEvent, None] | None = None
        self._result: ChatResult | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop reading and give the connection back. Safe to call more than once."""
        reader, self._reader = self._reader, None
        if reader is not None:
            await reader.aclose()
        if self._events is not None:
            await self._events.aclose()

    def __aiter__(self) -> Self:
        if self._iterated:
            raise LLMUsageError(
                "a ChatStream can be iterated only once; use `await stream.result()` for the "
                "whole answer"
            )
        self._iterated = True
        if self._call.resume:
            self._events = self._call.items(self._request_for, self._first)
        return self

    def __anext__(self) -> Awaitable[StreamEvent]:
        reader = self._reader
        if reader is not None:
            return reader.__anext__()
        if self._events is not None:
            return self._events.__anext__()
        if not self._iterated:
            raise LLMUsageError("iterate the stream with `async for`")
        return self._open()

    async def _open(self) -> StreamEvent:
        if self._call.attempts:  # opened before: its reader has ended or failed
            raise StopAsyncIteration
        reader, event = await self._call.open(self._request_for, first=self._first, typed=True)
        self._reader = reader
        if event is ENDED:
            raise StopAsyncIteration
        first: StreamEvent = event
        return first

    async def text(self) -> AsyncIterator[str]:
        """The answer's text pieces as they arrive (other events are still accumulated)."""
        async for event in self:
            if type(event) is TextDelta:
                yield event.text

    async def result(self) -> ChatResult:
        """The whole answer. Reads whatever has not been read yet.

        Raises:
            LLMError: As the stream would (see :meth:`LLMClient.stream`).
        """
        if self._result is None:
            call = self._call
            untouched = self._reader is None and self._events is None and not call.attempts
            if not self._iterated or untouched:
                self._iterated = True
                call.exposed = False  # nobody sees the events: a failure can start over
                reader, _ = await call.open(
                    self._request_for, first=self._first, typed=True, quiet=True
                )
                self._reader = reader
            events = self._events
            if events is not None:
                async for _event in events:
                    pass
            rest, self._reader = self._reader, None
            if rest is not None:
                async for _event in rest:
                    pass
            if call.done:
                self._result = await build_result(call)
        if self._result is None:
            raise LLMUsageError("the stream was closed before its answer was complete")
        return self._result


class RouterStream(ChatStream):
    """One streaming answer from a ``Router``: the same events, ``text()`` and ``result()``
    as :class:`ChatStream`, with each attempt on an endpoint the router picks.

    Use it as an async context manager, as a ``ChatStream``.
    """

    __slots__ = ()

    @property
    def endpoint(self) -> str | None:
        """The name of the endpoint answering (the last one tried); ``None`` before."""
        upstream = self._call.upstream
        return upstream.name if upstream is not None else None


#: Looks a call up in the response cache: the answer (a hit), or the flight of a request to
#: send (a miss).
Lookup = Callable[[], Awaitable[tuple[ChatResult | None, "Flight | None"]]]


def replay(result: ChatResult) -> Iterator[StreamEvent]:
    """The events of a whole answer, each part in one piece: its reasoning, its text, each
    tool call, its usage, why it finished (what a cached answer streams)."""
    if result.reasoning:
        yield ReasoningDelta(result.reasoning)
    if result.text:
        yield TextDelta(result.text)
    for index, call in enumerate(result.tool_calls):
        yield ToolCallDelta(index, call.id, call.name, orjson.dumps(call.arguments).decode())
    usage = result.usage
    if usage.prompt_tokens is not None or usage.completion_tokens is not None:
        yield UsageEvent(usage)
    if result.finish_reason is not None:
        yield FinishEvent(result.finish_reason)


class CachedStream(ChatStream):
    """A :class:`ChatStream` of a client with a response cache: before anything is sent, the
    cache is asked. A hit streams the kept answer's events (:func:`replay`) and gives it as
    the result (``cached=True``); a miss streams the server's answer as any stream does,
    and the cache keeps it once it is whole."""

    __slots__ = ("_looked", "_lookup", "_replay")

    def __init__(
        self, call: Call, request_for: RequestFor, first: Request | None, lookup: Lookup
    ) -> None:
        super().__init__(call, request_for, first)
        self._lookup = lookup
        self._looked = False
        self._replay: Iterator[StreamEvent] | None = None

    async def _hit(self) -> ChatResult | None:
        """Ask the cache, once; on a miss the call settles the flight when it ends."""
        self._looked = True
        hit, flight = await self._lookup()
        if flight is not None:
            self._call.add_hook(flight.hook)
        return hit

    def __anext__(self) -> Awaitable[StreamEvent]:
        if self._replay is not None:
            return self._replayed()
        if self._looked or not self._iterated:
            return super().__anext__()
        return self._first_event()

    async def _first_event(self) -> StreamEvent:
        hit = await self._hit()
        if hit is None:
            return await super().__anext__()
        self._result = hit
        events, self._events = self._events, None
        if events is not None:  # a resumable stream's loop, never started
            await events.aclose()
        self._replay = replay(hit)
        return await self._replayed()

    async def _replayed(self) -> StreamEvent:
        assert self._replay is not None
        for event in self._replay:
            return event
        raise StopAsyncIteration

    async def result(self) -> ChatResult:
        """The whole answer (see :meth:`ChatStream.result`): from the cache when it has it."""
        if not self._looked and not self._iterated:
            hit = await self._hit()
            if hit is not None:
                self._iterated = True
                self._result = hit
                return hit
        return await super().result()


async def whole_answer(
    call: Call, request_for: RequestFor, first: Request | None = None
) -> ChatResult:
    """Read a ``chat()`` call's answer to its end and give its ``ChatResult``: nothing
    reaches the caller before it, so any failure may start over."""
    reader, _ = await call.open(request_for, first=first, typed=True, quiet=True)
    async for _event in reader:  # quiet: nothing, until the answer has been read
        pass
    return await build_result(call)


async def build_result(call: Call) -> ChatResult:
    """The ``ChatResult`` of a call whose answer has ended: timings, server kind, and
    Ollama's truncation warning."""
    progress = call.progress
    upstream = call.upstream
    request = call.request
    assert progress is not None
    assert upstream is not None
    assert isinstance(request, ChatRequest)
    ended = call.ended_at if call.ended_at is not None else asyncio.get_running_loop().time()
    accumulator = progress.accumulator
    timings = timings_of(
        accumulator.server_metrics, accumulator.usage, call.started, progress.first_at, ended
    )
    server = progress.server_on(upstream)
    warnings = []
    if request.dialect == "ollama":
        prompt_tokens = accumulator.server_metrics.get("prompt_eval_count")
        warning = await _truncation_warning(upstream, request, prompt_tokens)
        if warning:
            warnings.append(warning)
    return accumulator.result(
        server=server, timings=timings, warnings=warnings, response_id=progress.response_id
    )


async def _truncation_warning(
    upstream: Upstream, request: ChatRequest, prompt_tokens: int | None
) -> str:
    """Ollama drops old messages without a word when the prompt exceeds the context in
    use; when the prompt filled that context, say so."""
    if not prompt_tokens:
        return ""
    options = request.options or {}
    context = options.get("num_ctx")
    if not isinstance(context, int):
        context = await _running_context_length(upstream, request.model)
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


async def _running_context_length(upstream: Upstream, model: str) -> int | None:
    """The context size Ollama runs ``model`` with now (``/api/ps``), if it is loaded."""
    try:
        running = await upstream.probe().running()
    except LLMError:
        return None
    wanted = canonical_ollama_name(model)
    for entry in running:
        if canonical_ollama_name(entry.name) == wanted:
            return entry.context_length
    return None
