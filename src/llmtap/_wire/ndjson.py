"""Newline-delimited JSON splitter: the bytes of an NDJSON body in, one JSON text per line out.

Ollama's native ``/api/chat`` stream is one JSON object per line. This module only finds the
lines; parsing them is the caller's job. It does no I/O: the caller feeds it body chunks as
they arrive.
"""

from __future__ import annotations

from llmtap._wire.lines import LineBuffer

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
        self._lines = LineBuffer(max_line_bytes, "NDJSON")

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
        lines = self._lines.split(chunk)
        return [stripped for line in lines if (stripped := line.strip())]

    def close(self) -> list[bytes]:
        """Finish the stream, returning its last line if that had no final newline.

        Returns:
            The unterminated last line, stripped, if it is not blank (so ``[]`` or one line).
            Calling it again returns ``[]``.
        """
        line = self._lines.rest().strip()
        return [line] if line else []
