"""Tests for the newline-delimited JSON splitter (llmtap._wire.ndjson)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtap._errors import LLMStreamError
from llmtap._wire.ndjson import NDJSONDecoder


def decode(*pieces: bytes, max_line_bytes: int = 16 * 1024 * 1024) -> list[bytes]:
    """Feed the pieces in order, then close, and return every line."""
    decoder = NDJSONDecoder(max_line_bytes=max_line_bytes)
    lines: list[bytes] = []
    for piece in pieces:
        lines += decoder.feed(piece)
    return lines + decoder.close()


OLLAMA = (
    b'{"model":"llama3","message":{"role":"assistant","content":"H\xc3\xa9"},"done":false}\n'
    b'{"model":"llama3","message":{"role":"assistant","content":" there"},"done":false}\n'
    b'{"model":"llama3","message":{"role":"assistant","content":""},"done":true}\n'
)
OLLAMA_LINES = OLLAMA.splitlines()


def test_lines_in_one_piece() -> None:
    """Each complete line comes out as it is, without its newline."""
    assert NDJSONDecoder().feed(OLLAMA) == OLLAMA_LINES


def test_split_at_every_boundary() -> None:
    """Splitting the stream into two pieces at any byte gives the same lines."""
    for cut in range(len(OLLAMA) + 1):
        assert decode(OLLAMA[:cut], OLLAMA[cut:]) == OLLAMA_LINES, cut


def test_byte_at_a_time() -> None:
    """Feeding one byte at a time gives the same lines."""
    assert decode(*(OLLAMA[i : i + 1] for i in range(len(OLLAMA)))) == OLLAMA_LINES


def test_crlf_lines() -> None:
    """The CR of a CRLF line end is stripped."""
    assert decode(b'{"a":1}\r\n{"b":2}\r\n') == [b'{"a":1}', b'{"b":2}']


def test_crlf_split_between_cr_and_lf() -> None:
    """A CRLF split across feeds still gives the clean line."""
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\r') == []
    assert decoder.feed(b"\n") == [b'{"a":1}']


def test_surrounding_whitespace_is_stripped() -> None:
    """Spaces and tabs around a line are removed; inner ones are kept."""
    assert decode(b'  \t{"a": 1}  \n') == [b'{"a": 1}']


def test_blank_lines_are_skipped() -> None:
    """Empty and whitespace-only lines produce nothing."""
    assert decode(b'\n\n  \n\r\n{"a":1}\n\t\n\n{"b":2}\n\n') == [b'{"a":1}', b'{"b":2}']


def test_missing_final_newline_is_returned_by_close() -> None:
    """close() returns an unterminated last line."""
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n{"done":true}') == [b'{"a":1}']
    assert decoder.close() == [b'{"done":true}']


def test_close_with_blank_tail() -> None:
    """An unterminated whitespace-only tail gives nothing at close()."""
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n \r') == [b'{"a":1}']
    assert decoder.close() == []


def test_close_with_nothing_pending() -> None:
    """close() after a complete stream returns nothing, and so does a second close()."""
    decoder = NDJSONDecoder()
    assert decoder.feed(b'{"a":1}\n') == [b'{"a":1}']
    assert decoder.close() == []
    assert decoder.close() == []


def test_empty_feed() -> None:
    """Feeding no bytes yields nothing and changes nothing."""
    decoder = NDJSONDecoder()
    assert decoder.feed(b"") == []
    assert decoder.feed(b'{"a"') == []
    assert decoder.feed(b"") == []
    assert decoder.feed(b":1}\n") == [b'{"a":1}']


def test_line_at_the_limit_is_accepted() -> None:
    """A line exactly max_line_bytes long is fine."""
    assert decode(b"x" * 100 + b"\n", max_line_bytes=100) == [b"x" * 100]


def test_complete_long_line_raises() -> None:
    """A complete line over max_line_bytes raises LLMStreamError."""
    with pytest.raises(LLMStreamError, match=r"NDJSON line longer than 100 bytes"):
        NDJSONDecoder(max_line_bytes=100).feed(b"{}\n" + b"x" * 101 + b"\n{}\n")


def test_long_line_completed_by_next_chunk_raises() -> None:
    """Buffered start plus the rest of the line over the limit raises when the line ends."""
    decoder = NDJSONDecoder(max_line_bytes=100)
    assert decoder.feed(b"x" * 60) == []
    with pytest.raises(LLMStreamError, match="max_line_bytes"):
        decoder.feed(b"x" * 41 + b"\n")


def test_long_incomplete_tail_raises_as_soon_as_limit_exceeded() -> None:
    """A line arriving byte by byte raises on exactly the byte that takes it over the limit."""
    decoder = NDJSONDecoder(max_line_bytes=100)
    assert decoder.feed(b'{"a":1}\n') == [b'{"a":1}']
    for _ in range(100):
        assert decoder.feed(b"x") == []
    with pytest.raises(LLMStreamError, match="Raise max_line_bytes if this is expected"):
        decoder.feed(b"x")


def test_error_message_says_what_to_do() -> None:
    """The error message names the limit, the cause and the remedy."""
    with pytest.raises(LLMStreamError) as info:
        NDJSONDecoder(max_line_bytes=10).feed(b"x" * 11)
    assert info.value.message == (
        "NDJSON line longer than 10 bytes (max_line_bytes); the server sent an oversized "
        "line. Raise max_line_bytes if this is expected."
    )


def test_long_line_in_many_small_pieces_under_limit() -> None:
    """A long line built from many small feeds comes out whole."""
    decoder = NDJSONDecoder()
    for _ in range(10_000):
        assert decoder.feed(b"0123456789") == []
    assert decoder.feed(b"\n") == [b"0123456789" * 10_000]


line_bytes = st.binary(max_size=20).filter(lambda b: b"\n" not in b)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    """Cut the stream at the given offsets (taken modulo its length + 1)."""
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@given(
    lines=st.lists(line_bytes, max_size=10),
    crlf=st.booleans(),
    final_newline=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_split_invariance(
    lines: list[bytes], crlf: bool, final_newline: bool, cuts: list[int]
) -> None:
    """Lines joined with LF or CRLF and split anywhere come back stripped, blanks skipped."""
    end = b"\r\n" if crlf else b"\n"
    stream = end.join(lines) + (end if final_newline and lines else b"")
    expected = [line.strip() for line in lines if line.strip()]
    assert decode(*split(stream, cuts)) == expected
