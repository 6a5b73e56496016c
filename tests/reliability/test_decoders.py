"""Properties of the SSE and NDJSON decoders that ``tests/test_sse.py`` and
``tests/test_ndjson.py`` leave out: NDJSON over arbitrary bytes, and the line limit, which must
reject a stream (or not) whatever the network did to its bytes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from llmtap._errors import LLMStreamError
from llmtap._wire.ndjson import NDJSONDecoder
from llmtap._wire.sse import SSEDecoder, SSEEvent

# Byte soup biased towards what the decoders care about: line ends, colons, spaces, field
# names, braces, NUL, a BOM and its pieces, broken UTF-8.
PIECES = [b"\r", b"\n", b"\r\n", b":", b" ", b"\x00", b"{", b"}", b'"', b"\xef\xbb\xbf", b"\xff"]
NAMES = [b"data", b"event", b"id", b"retry", b"error", b"[DONE]"]
soup = st.lists(st.sampled_from(PIECES + NAMES) | st.binary(max_size=8), max_size=60).map(b"".join)
cuts = st.lists(st.integers(min_value=0), max_size=10)
#: Limits small enough for the soup to cross them now and then.
limits = st.integers(min_value=0, max_value=24)


def split(stream: bytes, at: list[int]) -> list[bytes]:
    """Cut the stream at the given offsets (taken modulo its length + 1)."""
    points = sorted({cut % (len(stream) + 1) for cut in at})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


def sse(pieces: list[bytes], limit: int) -> list[SSEEvent] | str:
    """All events of the stream, or ``"rejected"`` if it raised LLMStreamError."""
    decoder = SSEDecoder(limit)
    events: list[SSEEvent] = []
    try:
        for piece in pieces:
            events += decoder.feed(piece)
        return events + decoder.close()
    except LLMStreamError:
        return "rejected"


def ndjson(pieces: list[bytes], limit: int) -> list[bytes] | str:
    """All lines of the stream, or ``"rejected"`` if it raised LLMStreamError."""
    decoder = NDJSONDecoder(limit)
    lines: list[bytes] = []
    try:
        for piece in pieces:
            lines += decoder.feed(piece)
        return lines + decoder.close()
    except LLMStreamError:
        return "rejected"


@given(stream=soup, at=cuts)
def test_ndjson_any_split_gives_the_same_lines(stream: bytes, at: list[int]) -> None:
    """Arbitrary bytes give the same NDJSON lines however they are split into reads."""
    assert ndjson(split(stream, at), 1 << 20) == ndjson([stream], 1 << 20)


@given(stream=soup, at=cuts, limit=limits)
def test_ndjson_random_bytes_raise_nothing_but_stream_error(
    stream: bytes, at: list[int], limit: int
) -> None:
    """Arbitrary bytes give stripped non-blank lines within the limit, or LLMStreamError."""
    result = ndjson(split(stream, at), limit)
    if result != "rejected":
        assert all(type(line) is bytes for line in result)
        assert all(line == line.strip() and line for line in result)
        assert all(len(line) <= limit for line in result)


@given(stream=soup, at=cuts, limit=limits)
def test_ndjson_line_limit_does_not_depend_on_the_split(
    stream: bytes, at: list[int], limit: int
) -> None:
    """Whether a stream is rejected for a long line, and what it gives if not, is the same
    for any split."""
    assert ndjson(split(stream, at), limit) == ndjson([stream], limit)


@given(stream=soup, at=cuts, limit=limits)
def test_sse_line_limit_does_not_depend_on_the_split(
    stream: bytes, at: list[int], limit: int
) -> None:
    """Whether an event stream is rejected for a long line, and which events it gives if not,
    is the same for any split (CRLF pairs and BOMs cut in two included)."""
    assert sse(split(stream, at), limit) == sse([stream], limit)


@given(stream=soup, at=cuts, limit=limits)
def test_sse_events_within_the_limit(stream: bytes, at: list[int], limit: int) -> None:
    """No event carries a data line longer than the limit: each data line of an accepted
    stream fits in max_line_bytes."""
    result = sse(split(stream, at), limit)
    if isinstance(result, list):
        for event in result:
            assert all(len(line) <= limit for line in event.data.split(b"\n"))
