"""``ChatStream``: one answer as typed events while it streams, and a ``ChatResult`` at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from llmtap import _retry
from llmtap._accumulate import Accumulator
from llmtap._dialects import guess_server
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

    async def _pump(
        self,
        client: LLMClient,
        request: ChatRequest,
        deadline: float,
        progress: Progress,
        on_output: Callable[[float], None] | None = None,
    ) -> AsyncGenerator[StreamEvent, None]:
        """One attempt's events: chunks fed to ``progress``'s accumulator, each event counted
        as delivered; ``on_output`` hears the time of each output event."""
        loop = asyncio.get_running_loop()
        accumulator = progress.accumulator
        async with client._attempt(request, deadline) as chunks:
            async for chunk in chunks:
                if progress.sample is None:
                    progress.sample = chunk
                for event in accumulator.feed(chunk):
                    if not isinstance(event, UsageEvent | FinishEvent):
                        if progress.first_at is None or on_output is not None:
                            now = loop.time()
                            if progress.first_at is None:
                                progress.first_at = now
                            if on_output is not None:
                                on_output(now)
                    elif type(event) is FinishEvent:
                        progress.sample = chunk  # llama.cpp and vLLM mark their finish chunks
                    self._delivered += 1
                    yield event


class Progress:
    """What one answer has gathered so far, across its attempts."""

    __slots__ = ("accumulator", "first_at", "sample")

    def __init__(self, accumulator: Accumulator) -> None:
        self.accumulator = accumulator
        self.first_at: float | None = None
        #: A chunk that may tell which server answered (see ``guess_server``).
        self.sample: dict[str, Any] | None = None


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
        progress = Progress(Accumulator(request.dialect))
        resumes = 0
        while True:
            try:
                async for event in self._pump(client, request, retries.total_at, progress):
                    yield event
                break
            except LLMError as error:
                accumulator = progress.accumulator
                if self._delivered:
                    continued = self._continuation(
                        error, accumulator, request, progress.sample, resumes
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
                progress = Progress(Accumulator(request.dialect))
        self._result = await client._finish(
            progress.accumulator, request, started, progress.first_at, progress.sample
        )

    def _continuation(
        self,
        error: LLMError,
        accumulator: Accumulator,
        request: ChatRequest,
        sample: dict[str, Any] | None,
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
        server = client.server or guess_server(request.dialect, sample)
        if server not in RESUMABLE_SERVERS:
            return None
        return request.continuation(accumulator.text, server)


def _resume_wait(client: LLMClient, resumes: int) -> float:
    if not _retry.waits_enabled():
        return 0.0
    config = client.config
    return _retry.backoff(resumes, config.retry_backoff_base, config.retry_backoff_max)
