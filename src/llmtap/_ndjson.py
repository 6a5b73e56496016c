"""Newline-delimited JSON splitter: the bytes of an NDJSON body in, one JSON text per line out.

Ollama's native ``/api/chat`` stream is one JSON object per line. This module only finds the
lines; parsing them is the caller's job. It does no I/O: the caller feeds it body chunks as
they arrive.
"""

from __future__ import annotations

from llmtap._errors import LLMStreamError

__all__ = ["NDJSONDecoder"]


class NDJSONDecoder:
    """Incremental splitter of an NDJSON body into its lines.

    Lines are split on LF only (JSON text never contains a raw newline), so a CRLF line end
    leaves a CR that is stripped along with the other surrounding whitespace. Blank lines are
    skipped.

    Args:
        max_line_bytes: Longest line accepted, in bytes, without its LF. A longer line,
            complete or still arriving, raises :class:`~llmtap.LLMStreamError` as soon as it
            is seen; the decoder should not be used afterwards.
    """

    def __init__(self, max_line_bytes: int = 16 * 1024 * 1024) -> None:
        self._max_line_bytes = max_line_bytes
        # The unfinished last line. It never contains an LF, so it is never searched again: a
        # long line fed in small pieces costs linear time, not quadratic.
        self._tail = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """Split the next chunk of the body.

        Args:
            chunk: The next bytes of the stream, of any length.

        Returns:
            The lines this chunk completed, in order, stripped of surrounding whitespace;
            blank lines are left out.

        Raises:
            LLMStreamError: A line is longer than ``max_line_bytes``.
        """
        lines = chunk.split(b"\n")
        limit = self._max_line_bytes
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
        tail = lines.pop()
        self._tail += tail
        return [stripped for line in lines if (stripped := line.strip())]

    def close(self) -> list[bytes]:
        """Finish the stream, returning its last line if that had no final newline.

        Returns:
            The unterminated last line, stripped, if it is not blank (so ``[]`` or one line).
            Calling it again returns ``[]``.
        """
        line = bytes(self._tail).strip()
        self._tail.clear()
        return [line] if line else []

    def _too_long(self) -> LLMStreamError:
        return LLMStreamError(
            f"NDJSON line longer than {self._max_line_bytes} bytes (max_line_bytes); the server "
            "sent an oversized line. Raise max_line_bytes if this is expected."
        )
