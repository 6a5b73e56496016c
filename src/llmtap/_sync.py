"""``SyncClient``: the async client for scripts and notebooks, on a private event-loop thread.

Every call is handed to one event loop that runs on a daemon thread of its own, so it works
the same outside any event loop (a script) and inside a running one (a Jupyter cell).
``close()`` closes the connections and ends the thread; a client dropped without it (or still
open when the interpreter exits) is closed the same way by a finalizer, which holds the loop
and the async client but never the ``SyncClient`` itself.
"""

from __future__ import annotations

import asyncio
import threading
import weakref
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

from llmtap._client import LLMClient
from llmtap._config import LLMConfig
from llmtap._errors import LLMUsageError
from llmtap._results import ChatResult, PreflightReport, StreamEvent, TextDelta
from llmtap._stream import ChatStream
from llmtap._wire.dialects import MessageLike

if TYPE_CHECKING:
    from llmtap._parse import OutputT
    from llmtap._toolloop import ToolEventHandler, ToolRun

__all__ = ["SyncChatStream", "SyncClient"]

T = TypeVar("T")

_CLOSED = "this SyncClient is closed; create a new one"


class _LoopThread:
    """An event loop running on a daemon thread until :meth:`stop`."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.stopped = False
        self._thread = threading.Thread(target=self._serve, name="llmtap-sync", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            self.loop.run_forever()
        finally:
            self.loop.close()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        if self.stopped:
            coro.close()  # never started: no "coroutine was never awaited" warning
            raise LLMUsageError(_CLOSED)
        if threading.current_thread() is self._thread:
            coro.close()
            raise LLMUsageError("SyncClient cannot be called from its own event-loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self, last: Coroutine[Any, Any, None]) -> None:
        """Run ``last`` (closing the client) on the loop, then end the loop and its thread.
        Safe to call again (``last`` is then dropped unstarted), and from any thread."""
        if self.stopped:
            last.close()
            return
        self.stopped = True
        loop = self.loop
        if threading.current_thread() is self._thread:
            # A finalizer that runs on the loop's own thread (garbage collected there): it
            # cannot wait for the loop, so it leaves the loop to finish and stop by itself.
            loop.create_task(last).add_done_callback(lambda _task: loop.stop())
            return
        try:
            asyncio.run_coroutine_threadsafe(last, loop).result()
        finally:
            loop.call_soon_threadsafe(loop.stop)
            self._thread.join()


def _shut_down(runner: _LoopThread, client: LLMClient) -> None:
    """Close ``client``'s connections and stop ``runner``: ``SyncClient.close()``, or the
    finalizer of a ``SyncClient`` that was never closed."""
    runner.stop(client.close())


class SyncChatStream:
    """A :class:`ChatStream` for synchronous code: iterate it for events, or call
    :meth:`text` and :meth:`result`. Use it in a ``with`` block."""

    def __init__(self, runner: _LoopThread, stream: ChatStream) -> None:
        self._runner = runner
        self._stream = stream

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[StreamEvent]:
        events = self._stream.__aiter__()

        async def next_event() -> StreamEvent | None:
            try:
                return await events.__anext__()
            except StopAsyncIteration:
                return None

        while (event := self._runner.run(next_event())) is not None:
            yield event

    def text(self) -> Iterator[str]:
        """The answer's text pieces as they arrive."""
        for event in self:
            if type(event) is TextDelta:
                yield event.text

    def result(self) -> ChatResult:
        """The whole answer (reads whatever has not been read yet)."""
        return self._runner.run(self._stream.result())

    def close(self) -> None:
        """Stop reading and give the connection back."""
        self._runner.run(self._stream.aclose())


class SyncClient:
    """The blocking face of :class:`LLMClient`, for scripts and notebooks.

    Args:
        config: As for :class:`LLMClient`.
        **overrides: As for :class:`LLMClient`.

    Use it in a ``with`` block, or call :meth:`close`. A client dropped without being closed
    (or still open at exit) closes its connections and stops its thread by itself.

    Example:
        >>> with SyncClient(model="qwen3") as client:
        ...     print(client.chat([Message.user("Hi")]).text)
        ...     with client.stream([Message.user("Count to 5")]) as stream:
        ...         for piece in stream.text():
        ...             print(piece, end="")
        Hello!
        1, 2, 3, 4, 5
    """

    def __init__(self, config: LLMConfig | None = None, **overrides: Any) -> None:
        self._client = LLMClient(config, **overrides)
        self._runner = _LoopThread()
        # Closes the connections and ends the thread when this object is dropped unclosed,
        # or at exit; holds the loop and the async client, never ``self``.
        self._finalizer = weakref.finalize(self, _shut_down, self._runner, self._client)

    @property
    def client(self) -> LLMClient:
        """The async client underneath."""
        return self._client

    def preflight_check(self) -> PreflightReport:
        """See :meth:`LLMClient.preflight_check`."""
        return self._runner.run(self._client.preflight_check())

    def chat(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        **params: Any,
    ) -> ChatResult:
        """See :meth:`LLMClient.chat`."""
        return self._runner.run(self._client.chat(messages, tools, **params))

    def stream(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        **params: Any,
    ) -> SyncChatStream:
        """See :meth:`LLMClient.stream`."""
        if self._runner.stopped:
            raise LLMUsageError(_CLOSED)
        return SyncChatStream(self._runner, self._client.stream(messages, tools, **params))

    def embed(self, texts: str | Sequence[str], **params: Any) -> list[list[float]]:
        """See :meth:`LLMClient.embed`."""
        return self._runner.run(self._client.embed(texts, **params))

    def run_tools(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any],
        *,
        max_rounds: int = 8,
        on_event: ToolEventHandler | None = None,
        stream: bool = False,
        **params: Any,
    ) -> ToolRun:
        """See :meth:`LLMClient.run_tools`. The tools and ``on_event`` are called as there:
        async ones on the client's event-loop thread, sync tools in worker threads, and a
        sync ``on_event`` on the loop thread (keep it short)."""
        return self._runner.run(
            self._client.run_tools(
                messages,
                tools,
                max_rounds=max_rounds,
                on_event=on_event,
                stream=stream,
                **params,
            )
        )

    def parse(
        self,
        messages: Iterable[MessageLike],
        output_type: type[OutputT],
        *,
        repair_rounds: int = 1,
        **params: Any,
    ) -> OutputT:
        """See :meth:`LLMClient.parse`."""
        return self._runner.run(
            self._client.parse(messages, output_type, repair_rounds=repair_rounds, **params)
        )

    def close(self) -> None:
        """Close the connection pool and stop the loop thread. Calls made afterwards raise
        ``LLMUsageError``; a second ``close()`` does nothing."""
        self._finalizer()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
