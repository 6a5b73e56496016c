"""Server-Sent Events decoder: the bytes of a ``text/event-stream`` body in, events out.

Follows the event-stream interpretation of the WHATWG HTML standard
(https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation),
working on bytes rather than text, with two deliberate departures that are documented on
:class:`SSEDecoder`. It does no I/O: the caller feeds it body chunks as they arrive.
"""

from __future__ import annotations

from contextlib import suppress

from llmtap._wire.lines import LineBuffer

__all__ = ["SSEDecoder", "SSEEvent"]

_BOM = b"\xef\xbb\xbf"
_LF = 0x0A
_CR = 0x0D
_COLON = 0x3A


class SSEEvent:
    """One dispatched event.

    Attributes:
        event: The event type; ``"message"`` when the event had no ``event:`` field.
        data: The event's data lines joined with ``b"\\n"``, left as bytes so that they can go
            straight to ``orjson.loads``.
        id: The last event id in effect when the event was dispatched (ids persist from one
            event to the next), or ``None`` if the stream never set one.
        retry: This event's own ``retry:`` value in milliseconds, if it had a valid one.
    """

    __slots__ = ("data", "event", "id", "retry")

    event: str
    data: bytes
    id: str | None
    retry: int | None

    def __init__(
        self, event: str, data: bytes, id: str | None = None, retry: int | None = None
    ) -> None:
        self.event = event
        self.data = data
        self.id = id
        self.retry = retry

    def __repr__(self) -> str:
        return (
            f"SSEEvent(event={self.event!r}, data={self.data!r}, "
            f"id={self.id!r}, retry={self.retry!r})"
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, SSEEvent):
            return NotImplemented
        return (
            self.event == other.event
            and self.data == other.data
            and self.id == other.id
            and self.retry == other.retry
        )


class SSEDecoder:
    """Incremental decoder turning the bytes of an event stream into :class:`SSEEvent` objects.

    Feed it the body chunk by chunk; each call returns the events that chunk completed. Lines
    may end in LF, CRLF or CR, in any mix, and chunks may split anything anywhere (a CRLF, a
    UTF-8 character, the leading byte order mark). Data is never decoded; event types and ids
    are decoded as UTF-8 with replacement characters.

    Two departures from the standard, both for LLM servers:

    * A field named ``error`` is treated like ``event: error`` plus ``data:`` with its value.
      Older llama.cpp servers report mid-stream failures as ``error: {...}`` followed by a
      blank line, which a plain SSE parser would silently drop.
    * :meth:`close` dispatches an event left pending at end of stream (see there).

    A CR ending a chunk is taken as a line end at once; if the next chunk starts with LF, that
    LF is dropped as the second half of a CRLF. This gives the same events as waiting for the
    next chunk, without holding back an event that a CR-terminated blank line completed.

    Args:
        max_line_bytes: Longest line accepted, in bytes, without its line end. A longer line,
            complete or still arriving, raises :class:`~llmtap.LLMStreamError` as soon as it
            is seen; the decoder should not be used afterwards.
    """

    def __init__(self, max_line_bytes: int = 16 * 1024 * 1024) -> None:
        self._lines = LineBuffer(max_line_bytes, "SSE")
        self._bom = b""  # a prefix of the byte order mark, held while it may be split
        self._at_start = True  # a byte order mark may still be ahead
        self._after_cr = False  # the last chunk ended in CR: a leading LF is part of a CRLF
        self._data: list[bytes] = []
        self._event = ""
        self._id: str | None = None
        self._retry: int | None = None
        #: Nothing is pending (no partial line, data, field or CR, past the start): the
        #: next chunk may be taken by :meth:`lone_data`.
        self._idle = False

    def lone_data(self, chunk: bytes) -> bytes | None:
        """The data of ``chunk`` when it is exactly one whole event of one ``data: `` line and
        nothing is pending, else ``None`` (then :meth:`feed` it).

        The common case of a streaming LLM answer, one token event per read, costs a few
        comparisons this way; the result is the same as :meth:`feed` would give.
        """
        if (
            self._idle
            and chunk[:6] == b"data: "
            and chunk[-2:] == b"\n\n"
            and chunk.find(b"\n") == len(chunk) - 2
            and b"\r" not in chunk
            and len(chunk) - 2 <= self._lines.limit
        ):
            return chunk[6:-2]
        return None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Decode the next chunk of the body.

        Args:
            chunk: The next bytes of the stream, of any length.

        Returns:
            The events this chunk completed, in stream order (often none or one).

        Raises:
            LLMStreamError: A line is longer than ``max_line_bytes``.
        """
        if self._at_start:
            chunk = self._strip_bom(chunk)
        if self._after_cr and chunk:
            self._after_cr = False
            if chunk[0] == _LF:
                chunk = chunk[1:]
        if not chunk:
            return []
        if b"\r" in chunk:
            self._after_cr = chunk[-1] == _CR
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        events = self._process(self._lines.split(chunk))
        self._idle = not (
            self._data
            or self._event
            or self._retry is not None
            or self._after_cr
            or self._lines.holding
        )
        return events

    def close(self) -> list[SSEEvent]:
        """Finish the stream: decode what is left and dispatch the pending event, if any.

        Unlike the standard, which drops an event that the stream ends before completing,
        this treats an unterminated last line as terminated and then dispatches a pending
        event that has data. LLM servers sometimes end the body without the final blank line,
        and losing the last chunk would be worse than keeping it: a truly truncated stream is
        detected by the caller, from the missing ``[DONE]`` or final chunk.

        Returns:
            The event completed by the end of the stream, if any (so ``[]`` or one event).
            Calling it again returns ``[]``.
        """
        self._at_start = False
        self._after_cr = False
        self._idle = False
        rest = self._bom + self._lines.rest()
        self._bom = b""
        return self._process([rest, b""] if rest else [b""])

    def _strip_bom(self, chunk: bytes) -> bytes:
        """Drop one leading byte order mark, waiting for more bytes while it may be split."""
        if self._bom:  # a prefix of the mark held back by the previous call
            chunk, self._bom = self._bom + chunk, b""
        if len(chunk) < len(_BOM) and _BOM.startswith(chunk):
            self._bom = chunk
            return b""
        self._at_start = False
        return chunk[len(_BOM) :] if chunk.startswith(_BOM) else chunk

    def _process(self, lines: list[bytes]) -> list[SSEEvent]:
        """Interpret complete lines, returning the events they dispatch."""
        events: list[SSEEvent] = []
        data = self._data
        for line in lines:
            if line.startswith(b"data:"):  # the hot path: one data line per token
                data.append(line[6:] if line[5:6] == b" " else line[5:])
            elif not line:
                if data:
                    events.append(
                        SSEEvent(self._event or "message", b"\n".join(data), self._id, self._retry)
                    )
                    data.clear()
                self._event = ""
                self._retry = None
            elif line[0] != _COLON:  # a line starting with a colon is a comment
                self._field(line)
        return events

    def _field(self, line: bytes) -> None:
        """Apply one field line other than ``data:``."""
        name, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if name == b"data":
            self._data.append(value)
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._id = value.decode("utf-8", "replace")
        elif name == b"retry":
            # ASCII digits only (bytes.isdigit); int() may still refuse thousands of them.
            if value.isdigit():
                with suppress(ValueError):
                    self._retry = int(value)
        elif name == b"error":  # llmtap extension, see the class docstring
            self._event = "error"
            self._data.append(value)
