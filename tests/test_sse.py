"""Tests for the Server-Sent Events decoder (llmtap._wire.sse)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from llmtap._errors import LLMStreamError
from llmtap._wire.sse import SSEDecoder, SSEEvent

BOM = b"\xef\xbb\xbf"


def decode(*pieces: bytes, max_line_bytes: int = 16 * 1024 * 1024) -> list[SSEEvent]:
    """Feed the pieces in order, then close, and return every event."""
    decoder = SSEDecoder(max_line_bytes=max_line_bytes)
    events: list[SSEEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events + decoder.close()


def feed_only(*pieces: bytes) -> list[SSEEvent]:
    """Feed the pieces in order without closing, and return the events."""
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    for piece in pieces:
        events += decoder.feed(piece)
    return events


# --- The WHATWG standard's own examples ---------------------------------------------------


def test_spec_stock_example_joins_data_lines() -> None:
    """Several data lines make one event whose data joins them with LF."""
    stream = b"data: YHOO\ndata: +2\ndata: 10\n\n"
    assert feed_only(stream) == [SSEEvent("message", b"YHOO\n+2\n10")]


def test_spec_test_stream_example() -> None:
    """The comment block fires nothing; ids set, then reset to empty, then persist."""
    stream = (
        b": test stream\n"
        b"\n"
        b"data: first event\n"
        b"id: 1\n"
        b"\n"
        b"data:second event\n"
        b"id\n"
        b"\n"
        b"data:  third event\n"
        b"\n"
    )
    assert feed_only(stream) == [
        SSEEvent("message", b"first event", id="1"),
        SSEEvent("message", b"second event", id=""),
        SSEEvent("message", b" third event", id=""),
    ]


def test_spec_empty_data_example() -> None:
    """`data` with no colon is an empty data line; two of them give data b"\\n"."""
    stream = b"data\n\ndata\ndata\n\ndata:"
    assert feed_only(stream) == [SSEEvent("message", b""), SSEEvent("message", b"\n")]


def test_spec_empty_data_example_last_block_kept_by_close() -> None:
    """close() dispatches the unterminated last block that the standard would discard."""
    stream = b"data\n\ndata\ndata\n\ndata:"
    assert decode(stream) == [
        SSEEvent("message", b""),
        SSEEvent("message", b"\n"),
        SSEEvent("message", b""),
    ]


def test_spec_space_after_colon_is_optional() -> None:
    """`data:test` and `data: test` give identical events."""
    events = feed_only(b"data:test\n\ndata: test\n\n")
    assert events == [SSEEvent("message", b"test"), SSEEvent("message", b"test")]


# --- Fields ------------------------------------------------------------------------------


def test_event_field_sets_type() -> None:
    """An event: field sets the event type of the event it belongs to."""
    assert feed_only(b"event: delta\ndata: x\n\n") == [SSEEvent("delta", b"x")]


def test_event_type_resets_after_dispatch() -> None:
    """The event type does not carry over to the next event."""
    events = feed_only(b"event: delta\ndata: 1\n\ndata: 2\n\n")
    assert events == [SSEEvent("delta", b"1"), SSEEvent("message", b"2")]


def test_empty_event_field_means_message() -> None:
    """An empty event: value gives the default type "message"."""
    assert feed_only(b"event:\ndata: x\n\n") == [SSEEvent("message", b"x")]


def test_id_persists_across_events() -> None:
    """The last event id stays in effect for later events that set none."""
    events = feed_only(b"id: 7\ndata: a\n\ndata: b\n\nid: 8\ndata: c\n\n")
    assert [event.id for event in events] == ["7", "7", "8"]


def test_id_set_by_event_without_data_persists() -> None:
    """An id in a block with no data is still remembered, though nothing is dispatched."""
    assert feed_only(b"id: 3\n\ndata: x\n\n") == [SSEEvent("message", b"x", id="3")]


def test_id_with_nul_is_ignored() -> None:
    """An id containing NUL leaves the previous last event id in place."""
    events = feed_only(b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n")
    assert [event.id for event in events] == ["1", "1"]


def test_retry_field() -> None:
    """A retry: of ASCII digits is reported as an int on its event."""
    assert feed_only(b"retry: 3000\ndata: x\n\n") == [SSEEvent("message", b"x", retry=3000)]


def test_retry_belongs_to_one_event() -> None:
    """retry is not carried over to the next event."""
    events = feed_only(b"retry: 10\ndata: a\n\ndata: b\n\n")
    assert [event.retry for event in events] == [10, None]


@pytest.mark.parametrize(
    "value",
    [b"", b"1.5", b"-1", b"+1", b" 10", b"10 ", b"1e3", b"ten", "١٢".encode()],
)
def test_invalid_retry_is_ignored(value: bytes) -> None:
    """A retry value that is not all ASCII digits is ignored."""
    assert feed_only(b"retry: " + value + b"\ndata: x\n\n") == [SSEEvent("message", b"x")]


def test_retry_too_long_for_int_is_ignored() -> None:
    """A retry with more digits than int() accepts is ignored rather than raising."""
    assert feed_only(b"retry: " + b"9" * 5000 + b"\ndata: x\n\n") == [SSEEvent("message", b"x")]


def test_only_one_leading_space_is_removed() -> None:
    """Exactly one space after the colon is removed; more are kept."""
    assert feed_only(b"data:   x \n\n") == [SSEEvent("message", b"  x ")]


def test_colon_in_value_is_kept() -> None:
    """Only the first colon separates name and value."""
    assert feed_only(b'data: {"a":1}\n\n') == [SSEEvent("message", b'{"a":1}')]


def test_field_without_colon_has_empty_value() -> None:
    """A line with no colon is a field whose value is empty (here: event → "message")."""
    assert feed_only(b"event: x\nevent\ndata: y\n\n") == [SSEEvent("message", b"y")]


def test_unknown_fields_are_ignored() -> None:
    """Fields other than data, event, id, retry and error are ignored."""
    assert feed_only(b"foo: bar\nData: no\ndata: x\n\n") == [SSEEvent("message", b"x")]


@pytest.mark.parametrize("comment", [b":", b": ping", b":no space", b": data: fake"])
def test_comments_are_ignored(comment: bytes) -> None:
    """Lines starting with a colon, including keep-alives, are ignored."""
    stream = comment + b"\n\ndata: a\n" + comment + b"\ndata: b\n\n" + comment + b"\n"
    assert decode(stream) == [SSEEvent("message", b"a\nb")]


def test_event_without_data_is_not_dispatched() -> None:
    """A block with event and id but no data fires nothing, and its type does not leak."""
    assert feed_only(b"event: foo\nid: 3\n\ndata: x\n\n") == [SSEEvent("message", b"x", id="3")]


def test_blank_lines_alone_dispatch_nothing() -> None:
    """Runs of blank lines fire nothing."""
    assert decode(b"\n\n\n\r\n\r\r") == []


def test_error_field_extension() -> None:
    """An `error:` line (older llama.cpp) becomes an event of type "error" carrying its value."""
    stream = b'data: {"x":1}\n\nerror: {"code":500,"message":"boom"}\n\n'
    assert feed_only(stream) == [
        SSEEvent("message", b'{"x":1}'),
        SSEEvent("error", b'{"code":500,"message":"boom"}'),
    ]


def test_data_stays_bytes_and_event_and_id_are_text() -> None:
    """Data is returned undecoded; event type and id are decoded as UTF-8."""
    (event,) = feed_only("event: ünï\nid: ïd\ndata: ü\n\n".encode())
    assert event == SSEEvent("ünï", "ü".encode(), id="ïd")
    assert type(event.data) is bytes


def test_invalid_utf8_in_event_and_id_is_replaced() -> None:
    """Bad UTF-8 in event type or id becomes U+FFFD; data keeps the raw bytes."""
    events = feed_only(b"event: a\xffb\nid: \xfe\ndata: \xff\n\n")
    assert events == [SSEEvent("a\ufffdb", b"\xff", id="\ufffd")]


# --- Line ends -----------------------------------------------------------------------------


@pytest.mark.parametrize("end", [b"\n", b"\r", b"\r\n"], ids=["LF", "CR", "CRLF"])
def test_line_ends(end: bytes) -> None:
    """LF, CR and CRLF all end lines."""
    stream = end.join([b"event: e", b"data: a", b"data: b", b"", b"data: c", b"", b""])
    assert feed_only(stream) == [SSEEvent("e", b"a\nb"), SSEEvent("message", b"c")]


def test_mixed_line_ends() -> None:
    """Line ends may be mixed freely within one stream."""
    stream = b"data: a\r\ndata: b\rdata: c\n\r\ndata: d\r\r"
    assert feed_only(stream) == [SSEEvent("message", b"a\nb\nc"), SSEEvent("message", b"d")]


def test_crlf_split_between_cr_and_lf() -> None:
    """A CRLF split across feeds is one line end: the LF starting the next feed is dropped."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r\n\r") == [SSEEvent("message", b"a")]
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b"data: b\r") == []
    assert decoder.feed(b"\n\r\n") == [SSEEvent("message", b"b")]


def test_lone_cr_at_chunk_end_then_cr() -> None:
    """A CR at the end of a feed followed by a feed starting with CR is two line ends."""
    assert feed_only(b"data: a\r", b"\rdata: b\r", b"\r") == [
        SSEEvent("message", b"a"),
        SSEEvent("message", b"b"),
    ]


def test_lf_after_cr_only_dropped_once() -> None:
    """After a CR-ended feed, only the first LF of the next feed is swallowed."""
    assert feed_only(b"data: a\r", b"\n\n") == [SSEEvent("message", b"a")]


def test_empty_feed_keeps_pending_cr() -> None:
    """An empty feed between CR and LF does not break the CRLF apart."""
    assert feed_only(b"data: a\r", b"", b"\ndata: b\r\n\r\n") == [SSEEvent("message", b"a\nb")]


def test_no_splitting_on_other_unicode_line_breaks() -> None:
    """Vertical tab, form feed, NEL and U+2028 are data, not line ends."""
    data = "a\x0bb\x0cc\x1cd\u0085e\u2028f".encode()
    assert feed_only(b"data: " + data + b"\n\n") == [SSEEvent("message", data)]


# --- Byte order mark -----------------------------------------------------------------------


def test_bom_is_stripped() -> None:
    """A UTF-8 BOM at the start of the stream is removed."""
    assert feed_only(BOM + b"data: x\n\n") == [SSEEvent("message", b"x")]


@pytest.mark.parametrize("cut", [1, 2, 3])
def test_bom_split_across_feeds_is_stripped(cut: int) -> None:
    """The BOM is removed even when it arrives in pieces."""
    stream = BOM + b"data: x\n\n"
    assert feed_only(stream[:cut], stream[cut:]) == [SSEEvent("message", b"x")]


def test_bom_fed_byte_by_byte_is_stripped() -> None:
    """The BOM is removed when every byte of it comes in its own feed."""
    assert feed_only(b"\xef", b"\xbb", b"", b"\xbf", b"data: x\n\n") == [SSEEvent("message", b"x")]


def test_only_one_bom_is_stripped() -> None:
    """A second BOM becomes part of the field name, so that line is an unknown field."""
    assert decode(BOM + BOM + b"data: x\n\ndata: y\n\n") == [SSEEvent("message", b"y")]


def test_bom_not_at_start_is_not_stripped() -> None:
    """A BOM after the start is part of the field name, so that line is ignored."""
    assert decode(b"data: a\n\n" + BOM + b"data: b\n\n") == [SSEEvent("message", b"a")]


def test_bom_prefix_that_is_not_a_bom_is_kept() -> None:
    """Bytes that start like a BOM but are not one stay in the stream."""
    assert decode(b"\xef\xbb", b"data: x\n\ndata: y\n\n") == [SSEEvent("message", b"y")]


def test_stream_of_only_a_partial_bom() -> None:
    """A stream that ends inside a would-be BOM decodes to nothing."""
    assert decode(b"\xef\xbb") == []


# --- UTF-8 split across feeds ---------------------------------------------------------------


def test_utf8_characters_split_at_every_byte() -> None:
    """Multibyte characters split at any byte give the same event."""
    stream = "event: ëvent\nid: ïd\ndata: héllo 🙂 世界\n\n".encode()
    expected = [SSEEvent("ëvent", "héllo 🙂 世界".encode(), id="ïd")]
    for cut in range(len(stream) + 1):
        assert decode(stream[:cut], stream[cut:]) == expected, cut


# --- close() -------------------------------------------------------------------------------


def test_close_processes_unterminated_final_line() -> None:
    """An unterminated last data line is processed and its event dispatched."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\ndata: last") == [SSEEvent("message", b"a")]
    assert decoder.close() == [SSEEvent("message", b"last")]


def test_close_dispatches_pending_event() -> None:
    """An event whose final blank line never came is dispatched."""
    decoder = SSEDecoder()
    assert decoder.feed(b"event: e\nid: 4\ndata: a\ndata: b\n") == []
    assert decoder.close() == [SSEEvent("e", b"a\nb", id="4")]


def test_close_with_pending_cr() -> None:
    """A CR at the very end of the stream counts as a line end."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\r") == []
    assert decoder.close() == [SSEEvent("message", b"a")]


def test_close_with_nothing_pending() -> None:
    """close() after a complete stream returns no events, and so does a second close()."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: a\n\n: bye\n") == [SSEEvent("message", b"a")]
    assert decoder.close() == []
    assert decoder.close() == []


def test_close_on_empty_stream() -> None:
    """close() on a stream that sent nothing returns no events."""
    assert SSEDecoder().close() == []


def test_close_with_unterminated_comment() -> None:
    """An unterminated last comment line dispatches nothing."""
    assert decode(b"data: a\n\n: keep-alive") == [SSEEvent("message", b"a")]


def test_close_with_event_without_data() -> None:
    """A pending block with no data is not dispatched at close()."""
    assert decode(b"event: x\nid: 1") == []


# --- max_line_bytes ------------------------------------------------------------------------


def test_line_at_the_limit_is_accepted() -> None:
    """A line exactly max_line_bytes long is fine."""
    line = b"data: " + b"x" * 94
    assert decode(line + b"\n\n", max_line_bytes=100) == [SSEEvent("message", b"x" * 94)]


def test_complete_long_line_raises() -> None:
    """A complete line over max_line_bytes raises LLMStreamError."""
    decoder = SSEDecoder(max_line_bytes=100)
    with pytest.raises(LLMStreamError, match=r"longer than 100 bytes \(max_line_bytes\)"):
        decoder.feed(b"data: " + b"x" * 95 + b"\n\n")


def test_long_line_among_short_ones_in_one_big_chunk_raises() -> None:
    """A long line inside a chunk full of short lines is caught too."""
    chunk = b"data: a\n\n" * 20 + b"data: " + b"x" * 95 + b"\n\n" + b"data: b\n\n" * 20
    with pytest.raises(LLMStreamError, match="max_line_bytes"):
        SSEDecoder(max_line_bytes=100).feed(chunk)


def test_long_line_completed_by_next_chunk_raises() -> None:
    """Buffered start plus the rest of the line over the limit raises when the line ends."""
    decoder = SSEDecoder(max_line_bytes=100)
    assert decoder.feed(b"data: " + b"x" * 90) == []
    with pytest.raises(LLMStreamError, match="max_line_bytes"):
        decoder.feed(b"y" * 10 + b"\n\n")


def test_long_incomplete_tail_raises_as_soon_as_limit_exceeded() -> None:
    """A line arriving byte by byte raises on exactly the byte that takes it over the limit."""
    decoder = SSEDecoder(max_line_bytes=100)
    assert decoder.feed(b"data: a\n\ndata: ") == [SSEEvent("message", b"a")]
    for _ in range(94):
        assert decoder.feed(b"x") == []
    with pytest.raises(LLMStreamError, match="Raise max_line_bytes if this is expected"):
        decoder.feed(b"x")


def test_long_incomplete_tail_in_one_chunk_raises() -> None:
    """An unfinished line already over the limit raises without waiting for its end."""
    with pytest.raises(LLMStreamError, match="max_line_bytes"):
        SSEDecoder(max_line_bytes=100).feed(b"data: a\n\ndata: " + b"x" * 200)


def test_error_message_says_what_to_do() -> None:
    """The error message names the limit, the cause and the remedy."""
    with pytest.raises(LLMStreamError) as info:
        SSEDecoder(max_line_bytes=16777216).feed(b"x" * 16777217)
    assert info.value.message == (
        "SSE line longer than 16777216 bytes (max_line_bytes); the server sent an oversized "
        "line. Raise max_line_bytes if this is expected."
    )


def test_long_line_in_many_small_pieces_under_limit() -> None:
    """A long line built from many small feeds comes out whole."""
    decoder = SSEDecoder()
    assert decoder.feed(b"data: ") == []
    for _ in range(10_000):
        assert decoder.feed(b"0123456789") == []
    assert decoder.feed(b"\n\n") == [SSEEvent("message", b"0123456789" * 10_000)]


# --- SSEEvent ------------------------------------------------------------------------------


def test_sse_event_repr() -> None:
    """The repr shows all four fields."""
    event = SSEEvent("message", b"x", id="1", retry=5)
    assert repr(event) == "SSEEvent(event='message', data=b'x', id='1', retry=5)"


def test_sse_event_equality() -> None:
    """Events compare by value and never equal other types."""
    assert SSEEvent("m", b"x") == SSEEvent("m", b"x", None, None)
    assert SSEEvent("m", b"x") != SSEEvent("m", b"x", id="1")
    assert SSEEvent("m", b"x") != ("m", b"x", None, None)


# --- Arbitrary splitting -------------------------------------------------------------------

REALISTIC = (
    BOM + b": connected\r\n"
    b"\r\n"
    b'data: {"id":"c1","choices":[{"delta":{"role":"assistant"}}]}\r\n'
    b"\r\n"
    b": ping\n"
    b'data: {"id":"c1","choices":[{"delta":{"content":"h\xc3\xa9llo \xf0\x9f\x99\x82"}}]}\n'
    b"\n"
    b"event: thinking\r"
    b"id: 42\r"
    b"data: line one\r"
    b"data:line two\r"
    b"data\r"
    b"\r"
    b"retry: 1500\r\n"
    b'data: {"id":"c1","choices":[{"delta":{},"finish_reason":"stop"}]}\r\n'
    b"\r\n"
    b":\n"
    b'error: {"message":"late failure"}\n'
    b"\n"
    b"data: [DONE]\r\n"
    b"\r\n"
)

REALISTIC_EVENTS = [
    SSEEvent("message", b'{"id":"c1","choices":[{"delta":{"role":"assistant"}}]}'),
    SSEEvent("message", '{"id":"c1","choices":[{"delta":{"content":"héllo 🙂"}}]}'.encode()),
    SSEEvent("thinking", b"line one\nline two\n", id="42"),
    SSEEvent(
        "message",
        b'{"id":"c1","choices":[{"delta":{},"finish_reason":"stop"}]}',
        id="42",
        retry=1500,
    ),
    SSEEvent("error", b'{"message":"late failure"}', id="42"),
    SSEEvent("message", b"[DONE]", id="42"),
]


def test_realistic_stream_in_one_piece() -> None:
    """The realistic stream decodes to the expected events."""
    assert decode(REALISTIC) == REALISTIC_EVENTS


def test_realistic_stream_split_at_every_boundary() -> None:
    """Splitting the stream into two pieces at any byte gives the same events."""
    for cut in range(len(REALISTIC) + 1):
        assert decode(REALISTIC[:cut], REALISTIC[cut:]) == REALISTIC_EVENTS, cut


def test_realistic_stream_byte_at_a_time() -> None:
    """Feeding one byte at a time gives the same events."""
    pieces = [REALISTIC[i : i + 1] for i in range(len(REALISTIC))]
    assert decode(*pieces) == REALISTIC_EVENTS


# --- Property tests ------------------------------------------------------------------------

# Text for one line: anything but the line-end characters (and NUL, which would void an id).
line_text = st.text(
    st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"), max_size=12
)

event_spec = st.tuples(
    st.none() | line_text,  # event type
    st.lists(line_text, min_size=1, max_size=4),  # data lines
    st.none() | line_text,  # id
    st.none() | st.integers(min_value=0, max_value=10**12),  # retry
    st.booleans(),  # a comment before the fields
    st.booleans(),  # a comment between the fields
)


def split(stream: bytes, cuts: list[int]) -> list[bytes]:
    """Cut the stream at the given offsets (taken modulo its length + 1)."""
    points = sorted({cut % (len(stream) + 1) for cut in cuts})
    return [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]


@given(
    specs=st.lists(event_spec, max_size=6),
    ending=st.sampled_from(["\n", "\r", "\r\n", "mixed"]),
    endings=st.lists(st.sampled_from([b"\n", b"\r", b"\r\n"]), min_size=1),
    bom=st.booleans(),
    cuts=st.lists(st.integers(min_value=0), max_size=8),
)
def test_serialized_events_round_trip(
    specs: list[tuple[str | None, list[str], str | None, int | None, bool, bool]],
    ending: str,
    endings: list[bytes],
    bom: bool,
    cuts: list[int],
) -> None:
    """Serialized events, split anywhere, decode back to the same events."""
    lines: list[bytes] = []
    expected: list[SSEEvent] = []
    last_id: str | None = None
    for event, data, id_, retry, comment_before, comment_between in specs:
        if comment_before:
            lines.append(b": ping")
        if event is not None:
            lines.append(b"event: " + event.encode())
        if id_ is not None:
            lines.append(b"id: " + id_.encode())
            last_id = id_
        if comment_between:
            lines.append(b":" + data[0].encode())
        if retry is not None:
            lines.append(b"retry: %d" % retry)
        lines += [b"data: " + item.encode() for item in data]
        lines.append(b"")
        expected.append(
            SSEEvent(event or "message", "\n".join(data).encode(), id=last_id, retry=retry)
        )
    stream = BOM if bom else b""
    for i, line in enumerate(lines):
        end = endings[i % len(endings)] if ending == "mixed" else ending.encode()
        if not line and end == b"\n" and stream.endswith(b"\r"):
            end = b"\r\n"  # CR then a bare LF would be one CRLF, swallowing this blank line
        stream += line + end
    assert decode(*split(stream, cuts)) == expected


# Byte soup biased towards what the decoder cares about: line ends, colons, spaces, field
# names, NUL, digits, BOM pieces and broken UTF-8.
SOUP_PIECES = [b"\r", b"\n", b"\r\n", b":", b" ", b"\x00", b"7", BOM, b"\xef", b"\xff", b"\xc3"]
SOUP_NAMES = [b"data", b"event", b"id", b"retry", b"error"]
soup_piece = st.sampled_from(SOUP_PIECES + SOUP_NAMES) | st.binary(max_size=6)
soup = st.lists(soup_piece, max_size=40).map(b"".join)


@given(
    stream=soup,
    cuts=st.lists(st.integers(min_value=0), max_size=8),
    max_line_bytes=st.none() | st.integers(min_value=0, max_value=12),
)
def test_arbitrary_bytes_raise_nothing_but_stream_error(
    stream: bytes, cuts: list[int], max_line_bytes: int | None
) -> None:
    """Any bytes, split anywhere, decode to well-typed events or raise LLMStreamError."""
    decoder = SSEDecoder() if max_line_bytes is None else SSEDecoder(max_line_bytes)
    events: list[SSEEvent] = []
    try:
        for piece in split(stream, cuts):
            events += decoder.feed(piece)
        events += decoder.close()
    except LLMStreamError:
        assert max_line_bytes is not None
    for event in events:
        assert type(event.event) is str
        assert type(event.data) is bytes
        assert event.id is None or type(event.id) is str
        assert event.retry is None or type(event.retry) is int


@given(stream=soup, cuts=st.lists(st.integers(min_value=0), max_size=8))
def test_arbitrary_bytes_split_invariant(stream: bytes, cuts: list[int]) -> None:
    """Any bytes decode to the same events however they are split."""
    assert decode(*split(stream, cuts)) == decode(stream)


# --- lone_data(): the one-event-per-read fast path ----------------------------------------


def lone_or_feed(pieces: list[bytes], max_line_bytes: int) -> list[tuple[str, bytes]] | str:
    """Each piece through ``lone_data`` first, then ``feed`` when it declines, as the reader
    does; events as (type, data), or the error's class name."""
    decoder = SSEDecoder(max_line_bytes)
    out: list[tuple[str, bytes]] = []
    try:
        for piece in pieces:
            lone = decoder.lone_data(piece)
            if lone is not None:
                out.append(("message", lone))
            else:
                out += [(event.event, event.data) for event in decoder.feed(piece)]
        out += [(event.event, event.data) for event in decoder.close()]
    except LLMStreamError as exc:
        return type(exc).__name__
    return out


def feed_all(pieces: list[bytes], max_line_bytes: int) -> list[tuple[str, bytes]] | str:
    try:
        return [
            (event.event, event.data) for event in decode(*pieces, max_line_bytes=max_line_bytes)
        ]
    except LLMStreamError as exc:
        return type(exc).__name__


def test_lone_data_takes_a_whole_event_once_the_stream_has_started() -> None:
    decoder = SSEDecoder()
    assert decoder.lone_data(b"data: a\n\n") is None  # the start: a BOM may come first
    assert decoder.feed(b"data: a\n\n") == [SSEEvent("message", b"a")]
    assert decoder.lone_data(b'data: {"x": 1}\n\n') == b'{"x": 1}'
    assert decoder.lone_data(b"data:  two spaces\n\n") == b" two spaces"


@pytest.mark.parametrize(
    ("pending", "piece"),
    [
        (b"data: a\n", b"data: b\n\n"),  # a data line waits for its blank line
        (b"event: error\n", b"data: b\n\n"),  # an event type waits
        (b"retry: 5\n", b"data: b\n\n"),  # a retry value waits
        (b"data: a\n\ndata: par", b"tial\n\n"),  # half a line is held
        (b"data: a\r", b"\ndata: b\n\n"),  # half a CRLF
    ],
)
def test_lone_data_declines_while_something_is_pending(pending: bytes, piece: bytes) -> None:
    decoder = SSEDecoder()
    decoder.feed(b": start\n")
    decoder.feed(pending)
    assert decoder.lone_data(piece) is None


@pytest.mark.parametrize(
    "piece",
    [
        b"data: a\n\ndata: b\n\n",  # two events
        b"data: a\ndata: b\n\n",  # two data lines
        b"data: a\r\n\r\n",  # CR line ends
        b"data:a\n\n",  # no space: feed() handles it
        b"event: x\ndata: a\n\n",
        b"data: a\n",  # not yet complete
        b"",
    ],
)
def test_lone_data_declines_anything_but_one_plain_event(piece: bytes) -> None:
    decoder = SSEDecoder()
    decoder.feed(b": start\n")
    assert decoder.lone_data(piece) is None


def test_lone_data_keeps_the_line_limit() -> None:
    decoder = SSEDecoder(max_line_bytes=10)
    decoder.feed(b": start\n")
    assert decoder.lone_data(b"data: abcd\n\n") == b"abcd"  # a 10-byte line
    assert decoder.lone_data(b"data: abcde\n\n") is None
    with pytest.raises(LLMStreamError):
        decoder.feed(b"data: abcde\n\n")


_sse_parts = st.sampled_from(
    [
        b"data: ",
        b"data:",
        b"event: error",
        b"id: 7",
        b"retry: 9",
        b": c",
        b"x",
        b"{}",
        b"\n",
        b"\n\n",
        b"\r",
        b"\r\n",
        BOM,
        b"data: [DONE]\n\n",
        b'data: {"a":1}\n\n',
    ]
)


_whole_events = st.binary(max_size=12).map(lambda data: b"data: " + data + b"\n\n")


@given(
    pieces=st.lists(
        st.one_of(_whole_events, st.lists(_sse_parts, max_size=6).map(b"".join)), max_size=12
    ),
    limit=st.sampled_from([4, 16, 1024]),
)
def test_lone_data_then_feed_gives_what_feed_alone_gives(pieces: list[bytes], limit: int) -> None:
    assert lone_or_feed(pieces, limit) == feed_all(pieces, limit)
