"""Splitting a byte stream into LF-terminated lines, with a bound on line length. No I/O here."""

from __future__ import annotations

from llmtap._errors import LLMStreamError

__all__ = ["LineBuffer"]


class LineBuffer:
    """Complete lines out of chunks of bytes; the unfinished last line is held, bounded.

    The held line never contains an LF, so it is never searched again: a long line fed in
    small pieces costs linear time, not quadratic.

    Args:
        max_line_bytes: Longest line accepted, without its LF. A longer line, complete or
            still arriving, raises :class:`~llmtap.LLMStreamError` as soon as it is seen.
        kind: What the lines are (``"SSE"``, ``"NDJSON"``), for the error message.
    """

    __slots__ = ("_kind", "_tail", "limit")

    def __init__(self, max_line_bytes: int, kind: str) -> None:
        #: Longest line accepted, without its LF.
        self.limit = max_line_bytes
        self._kind = kind
        self._tail = bytearray()

    @property
    def holding(self) -> bool:
        """Whether an unfinished line is held."""
        return bool(self._tail)

    def split(self, chunk: bytes) -> list[bytes]:
        """The lines ``chunk`` completes, without their LF (possibly none)."""
        lines = chunk.split(b"\n")
        limit = self.limit
        if len(lines) == 1:  # no line end: the unfinished line grows
            if len(self._tail) + len(chunk) > limit:
                raise self._too_long()
            self._tail += chunk
            return []
        if self._tail:
            if len(self._tail) + len(lines[0]) > limit:
                raise self._too_long()
            self._tail += lines[0]
            lines[0] = bytes(self._tail)
            self._tail.clear()
        if len(chunk) > limit and max(map(len, lines)) > limit:
            raise self._too_long()
        self._tail += lines.pop()
        return lines

    def rest(self) -> bytes:
        """The unfinished last line (``b""`` if none), which is then forgotten."""
        rest = bytes(self._tail)
        self._tail.clear()
        return rest

    def _too_long(self) -> LLMStreamError:
        return LLMStreamError(
            f"{self._kind} line longer than {self.limit} bytes (max_line_bytes); the server "
            "sent an oversized line. Raise max_line_bytes if this is expected."
        )
