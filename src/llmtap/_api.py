"""What the features above one call need from a client: :class:`ChatAPI`.

``run_tools`` and ``parse`` take any object with these calls, so an :class:`LLMClient` and a
``Router`` both serve them without either posing as the other.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Protocol

from llmtap._results import ChatResult
from llmtap._stream import ChatStream
from llmtap._wire.dialects import MessageLike

__all__ = ["ChatAPI"]


class ChatAPI(Protocol):
    """A source of chat answers: ``chat()`` for a whole answer, ``stream()`` for one as it
    comes (both :class:`LLMClient` and ``Router`` are one)."""

    async def chat(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        *,
        stream: bool = True,
        resume: bool = False,
        **params: Any,
    ) -> ChatResult:
        """The whole answer to ``messages``."""
        ...

    def stream(
        self,
        messages: Iterable[MessageLike],
        tools: Sequence[Any] | None = None,
        *,
        resume: bool = False,
        **params: Any,
    ) -> ChatStream:
        """The answer to ``messages`` as it streams."""
        ...
