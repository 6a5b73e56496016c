"""``SyncClient``: the async client for scripts and notebooks, on a private event-loop thread.

Every call is handed to one event loop that runs on a daemon thread of its own, so it works
the same outside any event loop (a script) and inside a running one (a Jupyter cell).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Iterator, Sequence
from types import TracebackType
from typing import Any, Self, TypeVar

from llmtap._client import LLMClient
from llmtap._config import LLMConfig
from llmtap._dialects import MessageLike
from llmtap._errors import LLMUsageError
from llmtap._preflight import PreflightReport
from llmtap._results import ChatResult, StreamEvent, TextDelta
from llmtap._stream import ChatStream

__all__ = ["SyncChatStream", "SyncClient"]

T = TypeVar("T")


class _LoopThread:
    """An event loop running forever on a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="llmtap-sync", daemon=True
        )
        self._thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise LLMUsageError("SyncClient cannot be called from its own event-loop thread")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join()
        self.loop.close()


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

    Example:
        >>> with SyncClient(model="qwen3") as client:
        ...     print(client.chat([Message.user("Hi")]).text)
        ...     with client.stream([Message.user("Count to 5")]) as stream:
        ...         for piece in stream.text():
        ...             print(piece, end="")
    """

    def __init__(self, config: LLMConfig | None = None, **overrides: Any) -> None:
        self._client = LLMClient(config, **overrides)
        self._runner = _LoopThread()
        self._closed = False

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
        return SyncChatStream(self._runner, self._client.stream(messages, tools, **params))

    def embed(self, texts: str | Sequence[str], **params: Any) -> list[list[float]]:
        """See :meth:`LLMClient.embed`."""
        return self._runner.run(self._client.embed(texts, **params))

    def close(self) -> None:
        """Close the connection pool and stop the loop thread."""
        if not self._closed:
            self._closed = True
            self._runner.run(self._client.close())
            self._runner.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
