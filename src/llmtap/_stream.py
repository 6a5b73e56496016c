"""``ChatStream``: one answer as typed events while it streams, and a ``ChatResult`` at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

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

    __slots__ = ("_delivered", "_events", "_exposed", "_result", "_resume")

    def __init__(self, *, resume: bool = False, exposed: bool = True) -> None:
        self._resume = resume
        #: Whether events reach a caller as they arrive (iteration), or only the final
        #: result does (``chat()``): then a failure mid-stream can be retried from scratch.
        self._exposed = exposed
        self._events: AsyncGenerator[StreamEvent, None] | None = None
        self._result: ChatResult | None = None
        self._delivered = 0

    async def __aenter__(self) -> ChatStream:
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
        if self._events is not None:
            await self._events.aclose()

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        if self._events is not None:
            raise LLMUsageError(
                "a ChatStream can be iterated only once; use `await stream.result()` for the "
                "whole answer"
            )
        self._events = self._run()
        return self._events

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
            async for _event in self._events:
                pass
        if self._result is None:
            raise LLMUsageError("the stream was closed before its answer was complete")
        return self._result

    def _run(self) -> AsyncGenerator[StreamEvent, None]:
        """The events of the answer, attempts and retries included; sets ``_result``."""
        raise NotImplementedError

    def _after_output(self, error: LLMError, accumulator: Accumulator) -> None:
        """A failure after events were delivered, and no resume: a caller who saw them gets
        :class:`LLMStreamInterrupted`; if nobody saw them (``chat()``), they are forgotten and
        the answer starts over."""
        if self._exposed:
            raise LLMStreamInterrupted.after(error, accumulator.text, self._delivered) from error
        self._delivered = 0


class Progress:
    """What one answer has gathered so far, across its attempts.

    Args:
        dialect: The dialect of the chunks.
    """

    __slots__ = ("_dialect", "_loop", "accumulator", "first_at", "on_output", "server")

    def __init__(self, dialect: Dialect = "openai") -> None:
        self.accumulator = Accumulator(dialect)
        #: Called with the loop time of each output event (text, reasoning, a tool call
        #: piece), if set; the router sets it per attempt.
        self.on_output: Callable[[float], None] | None = None
        self._loop = asyncio.get_running_loop()
        self.first_at: float | None = None
        self._dialect = dialect
        #: Which server answered, as the chunks tell (see ``guess_server``): guessed from
        #: the first chunk, then from each finish chunk (llama.cpp and vLLM mark those).
        self.server: ServerKind | None = None

    def take(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        """Feed one chunk to the accumulator and return its events, noting when output
        began and which chunk may tell the server.

        The streams call this inline, per chunk, rather than through a generator of their
        own: each ``async for`` layer costs CPU per token.
        """
        events = self.accumulator.feed(chunk)
        if self.server is None:
            self.server = guess_server(self._dialect, chunk)
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
        return events


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
        progress = Progress(request.dialect)
        resumes = 0
        while True:
            try:
                async with client._attempt(request, retries.total_at) as chunks:
                    async for chunk in chunks:
                        for event in progress.take(chunk):
                            self._delivered += 1
                            yield event
                break
            except LLMError as error:
                accumulator = progress.accumulator
                if self._delivered:
                    continued = self._continuation(
                        error, accumulator, request, progress.server, resumes
                    )
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
                    self._after_output(error, accumulator)
                elif request.drop_rejected_stream_options(error):
                    client._no_stream_options.add(request.url)
                    continue
                await retries.wait_or_raise(error)
                progress = Progress(request.dialect)
        self._result = await client._finish(
            progress.accumulator, request, started, progress.first_at, progress.server
        )

    def _continuation(
        self,
        error: LLMError,
        accumulator: Accumulator,
        request: ChatRequest,
        guessed: ServerKind | None,
        resumes: int,
    ) -> ChatRequest | None:
        """The request that continues the partial answer, when resuming is allowed: asked
        for, resumes left, text delivered and no tool call begun, a server known to continue
        a final assistant message, and a failure that is not the server refusing."""
        client = self._client
        if not self._resume or resumes >= client.config.max_retries:
            return None
        if accumulator.tool_calls_started or not accumulator.text:
            return None
        if isinstance(error, LLMResponseError) and not _retry.is_retryable(error):
            return None
        server = client.server or guessed or guess_server(request.dialect, None)
        if server not in RESUMABLE_SERVERS:
            return None
        return request.continuation(accumulator.text, server)


def _resume_wait(client: LLMClient, resumes: int) -> float:
    if not _retry.waits_enabled():
        return 0.0
    config = client.config
    return _retry.backoff(resumes, config.retry_backoff_base, config.retry_backoff_max)
