"""``ChatStream``: one answer as typed events while it streams, and a ``ChatResult`` at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Self

from llmtap import _retry
from llmtap._accumulate import Accumulator
from llmtap._dialects import Dialect, ServerKind, guess_server
from llmtap._errors import LLMError, LLMResponseError, LLMStreamInterrupted, LLMUsageError
from llmtap._log import get_logger
from llmtap._results import ChatResult, FinishEvent, StreamEvent, TextDelta, UsageEvent

if TYPE_CHECKING:
    from types import TracebackType

    from llmtap._client import ChatRequest, LLMClient

__all__ = ["ChatStream", "ClientStream", "Progress"]

_log = get_logger()

#: Servers known to continue a final assistant message (a prefill) and send only new text.
RESUMABLE_SERVERS = frozenset({"ollama", "llama.cpp", "vllm"})


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
        >>> print(result.usage, result.timings)
    """

    __slots__ = ("_events", "_exposed", "_reader", "_result", "_resume")

    def __init__(self, *, resume: bool = False, exposed: bool = True) -> None:
        self._resume = resume
        #: Whether events reach a caller as they arrive (iteration), or only the final
        #: result does (``chat()``): then a failure mid-stream can be retried from scratch.
        self._exposed = exposed
        self._events: AsyncGenerator[StreamEvent, None] | None = None
        #: While set, the body reader that serves ``__anext__`` directly (see ``_run``).
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
        self._reader = None
        if self._events is not None:
            await self._events.aclose()

    def __aiter__(self) -> Self:
        if self._events is not None:
            raise LLMUsageError(
                "a ChatStream can be iterated only once; use `await stream.result()` for the "
                "whole answer"
            )
        self._events = self._run()
        return self

    def __anext__(self) -> Awaitable[StreamEvent]:
        reader = self._reader
        if reader is not None:
            return reader.__anext__()
        if self._events is None:
            raise LLMUsageError("iterate the stream with `async for`")
        return self._events.__anext__()

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
            if self._events is None:
                self._exposed = False  # nobody sees the events: a failure can start over
                self._events = self._run()
            self._reader = None
            async for _event in self._events:
                pass
        if self._result is None:
            raise LLMUsageError("the stream was closed before its answer was complete")
        return self._result

    def _run(self) -> AsyncGenerator[StreamEvent, None]:
        """The events of the answer, attempts and retries included; sets ``_result``.

        A subclass may hand the body reader over (``_reader``) once the first event is out:
        from then on ``__anext__`` takes events straight from it, and ``_run`` stays
        suspended until ``result()`` or ``aclose()`` resumes it."""
        raise NotImplementedError

    def _after_output(self, error: LLMError, progress: Progress) -> None:
        """A failure after events were delivered, and no resume: a caller who saw them gets
        :class:`LLMStreamInterrupted`; if nobody saw them (``chat()``), they are forgotten and
        the answer starts over."""
        if self._exposed:
            raise LLMStreamInterrupted.after(error, progress.text, progress.delivered) from error


class Progress:
    """What one answer has gathered so far, across its attempts; the sink its chunks go to
    (see :meth:`Exchange.read_chunks`).

    Args:
        dialect: The dialect of the chunks.
        quiet: Give no events back (``chat()``: nobody sees them), only accumulate.
    """

    __slots__ = (
        "_dialect",
        "_loop",
        "accumulator",
        "delivered",
        "first_at",
        "on_output",
        "quiet",
        "server",
    )

    def __init__(self, dialect: Dialect = "openai", *, quiet: bool = False) -> None:
        self.accumulator = Accumulator(dialect)
        self.quiet = quiet
        #: Events produced so far (delivered to the caller, unless quiet).
        self.delivered = 0
        #: Called with the loop time of each output event (text, reasoning, a tool call
        #: piece), if set; the router sets it per attempt.
        self.on_output: Callable[[float], None] | None = None
        self._loop = asyncio.get_running_loop()
        self.first_at: float | None = None
        self._dialect = dialect
        #: Which server answered, as the chunks tell (see ``guess_server``): guessed from
        #: the first chunk, then from each finish chunk (llama.cpp and vLLM mark those).
        self.server: ServerKind | None = None

    @property
    def text(self) -> str:
        """The answer's text so far."""
        return self.accumulator.text

    def take(self, chunk: dict[str, Any]) -> Sequence[StreamEvent]:
        """Feed one chunk to the accumulator and return its events (none when quiet),
        noting when output began and which chunk may tell the server."""
        events = self.accumulator.feed(chunk)
        if self.server is None:
            self.server = guess_server(self._dialect, chunk)
        if events:
            self.delivered += len(events)
            # Events come in the order reasoning, text, tool calls, finish, usage: a chunk
            # ending in text has no finish, and after the first output only the router
            # wants to hear of more.
            if self.first_at is None or self.on_output or type(events[-1]) is not TextDelta:
                self._note(chunk, events)
        return () if self.quiet else events

    def _note(self, chunk: dict[str, Any], events: list[StreamEvent]) -> None:
        for event in events:
            kind = type(event)
            if kind is FinishEvent:
                self.server = guess_server(self._dialect, chunk)
            elif kind is not UsageEvent and (self.first_at is None or self.on_output):
                now = self._loop.time()
                if self.first_at is None:
                    self.first_at = now
                if self.on_output is not None:
                    self.on_output(now)


class ClientStream(ChatStream):
    """A :class:`ChatStream` from one :class:`LLMClient` (what ``client.stream()`` gives)."""

    __slots__ = ("_client", "_request")

    def __init__(
        self,
        client: LLMClient,
        request: ChatRequest,
        *,
        resume: bool = False,
        exposed: bool = True,
    ) -> None:
        super().__init__(resume=resume, exposed=exposed)
        self._client = client
        self._request = request

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        client = self._client
        request = self._request
        started = asyncio.get_running_loop().time()
        retries = client._retries(request.url, total_at=client._total_deadline())
        max_retries = retries.max_retries
        # A caller who iterates, with no resume to attempt, can take events straight from the
        # body reader once the first is out: nothing is left for this generator to do per
        # event, and the reader itself raises LLMStreamInterrupted after output. (Not for
        # Ollama's native route, whose end-of-answer check belongs at the end of iteration.)
        hand_over = self._exposed and not self._resume and request.dialect == "openai"
        progress = Progress(request.dialect, quiet=not self._exposed)
        resumes = 0
        while True:
            attempt = client._attempt(request, retries.total_at, progress, interrupted=hand_over)
            try:
                async with attempt as events:
                    async for event in events:
                        if hand_over:
                            hand_over = False
                            self._reader = events
                        yield event
                    self._reader = None
                    exchange = attempt.exchange
                    if exchange is None or exchange.ended_at is None:
                        return  # the handed-over reader failed; its caller has the error
                    ended = exchange.ended_at
                break
            except LLMError as error:
                if progress.delivered:
                    continued = self._continuation(error, progress, request, resumes)
                    if continued is not None:
                        await client._pause_before_retry(
                            error,
                            resumes + 1,
                            max_retries,
                            _resume_wait(client, resumes),
                            request.url,
                            event="llm_resume",
                        )
                        request, resumes = continued, resumes + 1
                        continue
                    self._after_output(error, progress)
                elif request.drop_rejected_stream_options(error):
                    client._no_stream_options.add(request.url)
                    continue
                await retries.wait_or_raise(error)
                progress = Progress(request.dialect, quiet=not self._exposed)
        self._result = await client._finish(
            progress.accumulator,
            request,
            started,
            progress.first_at,
            progress.server,
            ended,
        )

    def _continuation(
        self, error: LLMError, progress: Progress, request: ChatRequest, resumes: int
    ) -> ChatRequest | None:
        """The request that continues the partial answer, when resuming is allowed: asked
        for, resumes left, text delivered and no tool call begun, a server known to continue
        a final assistant message, and a failure that is not the server refusing."""
        client = self._client
        if not self._resume or resumes >= client.config.max_retries:
            return None
        accumulator = progress.accumulator
        if accumulator.tool_calls_started or not accumulator.text:
            return None
        if isinstance(error, LLMResponseError) and not _retry.is_retryable(error):
            return None
        server = client.server or progress.server or guess_server(request.dialect, None)
        if server not in RESUMABLE_SERVERS:
            return None
        return request.continuation(accumulator.text, server)


def _resume_wait(client: LLMClient, resumes: int) -> float:
    if not _retry.waits_enabled():
        return 0.0
    config = client.config
    return _retry.backoff(resumes, config.retry_backoff_base, config.retry_backoff_max)
