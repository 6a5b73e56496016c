"""``ChatStream``: one answer as typed events while it streams, and a ``ChatResult`` at the end."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
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

__all__ = ["ChatStream"]

_log = get_logger()

#: Servers known to continue a final assistant message (a prefill) and send only new text.
RESUMABLE_SERVERS = frozenset({"ollama", "llama.cpp", "vllm"})


class ChatStream:
    """One streaming answer. Get it from :meth:`LLMClient.stream`.

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

    __slots__ = (
        "_client",
        "_delivered",
        "_events",
        "_exposed",
        "_request",
        "_result",
        "_resume",
    )

    def __init__(
        self,
        client: LLMClient,
        request: ChatRequest,
        *,
        resume: bool = False,
        exposed: bool = True,
    ) -> None:
        self._client = client
        self._request = request
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

    async def _run(self) -> AsyncGenerator[StreamEvent, None]:
        client = self._client
        request = self._request
        loop = asyncio.get_running_loop()
        started = loop.time()
        retries = client._retries(request.url, total_at=client._total_deadline())
        max_retries = retries.max_retries
        accumulator = Accumulator(request.dialect)
        first_at: float | None = None
        sample: dict[str, Any] | None = None  # a chunk that may tell which server answered
        resumes = 0
        while True:
            try:
                async with aclosing(client._attempt(request, retries.total_at)) as chunks:
                    async for chunk in chunks:
                        if sample is None:
                            sample = chunk
                        for event in accumulator.feed(chunk):
                            if first_at is None and not isinstance(event, UsageEvent | FinishEvent):
                                first_at = loop.time()
                            elif type(event) is FinishEvent:
                                sample = chunk  # llama.cpp and vLLM mark their finish chunks
                            self._delivered += 1
                            yield event
                break
            except LLMError as error:
                if self._delivered:
                    continued = self._continuation(error, accumulator, request, sample, resumes)
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
                    if self._exposed:
                        raise LLMStreamInterrupted.after(
                            error, accumulator.text, self._delivered
                        ) from error
                    self._delivered = 0  # nothing reached a caller: start again from scratch
                elif request.drop_rejected_stream_options(error):
                    client._no_stream_options.add(request.url)
                    continue
                await retries.wait_or_raise(error)
                accumulator, first_at, sample = Accumulator(request.dialect), None, None
        self._result = await client._finish(accumulator, request, started, first_at, sample)

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
