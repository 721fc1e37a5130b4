"""The SSE wire format: encoder and decoder tables, hypothesis round trips, httpx-sse as oracle.

The decoder tables follow WHATWG HTML 9.2.5 "Parsing an event stream" and 9.2.6 "Interpreting an
event stream"; several rows mirror web-platform-tests/eventsource (format-*.any.js).
"""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest
from httpx_sse._decoders import SSEDecoder, SSELineDecoder
from hypothesis import given
from hypothesis import strategies as st

from stream_app.protocol import (
    BOM,
    Decoder,
    Event,
    ProtocolError,
    comment,
    decode,
    encode,
    encode_data,
)

# Characters str.splitlines() breaks on but 9.2.5 does not: they must stay inside one line.
NOT_LINE_BREAKS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e"]


def ev(data: str, event: str | None = None, id: str | None = None) -> Event:
    """An event as the decoder reports it (it never sets ``retry`` or ``comment``)."""
    return Event(data=data, event=event, id=id)


def feed_all(chunks: list[bytes]) -> tuple[list[Event], Decoder]:
    """Feed chunks to one decoder, then close it; the events and the decoder."""
    decoder = Decoder()
    events = [event for chunk in chunks for event in decoder.feed(chunk)]
    events.extend(decoder.close())
    return events, decoder


def split_at(blob: bytes, cuts: list[int]) -> list[bytes]:
    """``blob`` cut at the given offsets (any order, duplicates give empty chunks)."""
    bounds = [0, *sorted(cut % (len(blob) + 1) for cut in cuts), len(blob)]
    return [blob[a:b] for a, b in itertools.pairwise(bounds)]


# --- Encoder -------------------------------------------------------------------------------------

ENCODE_TABLE = [
    pytest.param(Event(data="hello"), b"data: hello\n\n", id="data"),
    pytest.param(Event(data=""), b"data: \n\n", id="empty-data"),
    pytest.param(Event(data="a\nb"), b"data: a\ndata: b\n\n", id="lf"),
    pytest.param(Event(data="a\r\nb"), b"data: a\ndata: b\n\n", id="crlf"),
    pytest.param(Event(data="a\rb"), b"data: a\ndata: b\n\n", id="cr"),
    pytest.param(Event(data="a\n\rb"), b"data: a\ndata: \ndata: b\n\n", id="lf-then-cr-is-two"),
    pytest.param(Event(data="a\n"), b"data: a\ndata: \n\n", id="trailing-lf-kept"),
    pytest.param(Event(data="a\r\n"), b"data: a\ndata: \n\n", id="trailing-crlf-kept"),
    pytest.param(Event(data="a\r"), b"data: a\ndata: \n\n", id="trailing-cr-kept"),
    pytest.param(Event(data="\n"), b"data: \ndata: \n\n", id="only-lf"),
    pytest.param(Event(data="\r\r\n\n"), b"data: \n" * 4 + b"\n", id="cr-crlf-lf"),
    pytest.param(Event(data="\na"), b"data: \ndata: a\n\n", id="leading-lf"),
    pytest.param(Event(data=" a"), b"data:  a\n\n", id="leading-space"),
    pytest.param(Event(data=" "), b"data:  \n\n", id="lone-space"),
    pytest.param(Event(data="a\n b"), b"data: a\ndata:  b\n\n", id="space-after-break"),
    pytest.param(Event(data=":x"), b"data: :x\n\n", id="colon-in-value"),
    pytest.param(Event(data="a\0b"), b"data: a\x00b\n\n", id="nul-in-data"),
    pytest.param(Event(data="\u20ac\U0001f600"), "data: \u20ac\U0001f600\n\n".encode(), id="utf8"),
    pytest.param(Event(data="x", event="update"), b"event: update\ndata: x\n\n", id="event"),
    pytest.param(Event(data="x", event=" e"), b"event:  e\ndata: x\n\n", id="event-space"),
    pytest.param(Event(data="x", event="a\0b"), b"event: a\x00b\ndata: x\n\n", id="event-nul"),
    pytest.param(Event(data="x", id="42"), b"id: 42\ndata: x\n\n", id="id"),
    pytest.param(Event(data="x", id=" 7"), b"id:  7\ndata: x\n\n", id="id-space"),
    pytest.param(Event(id=""), b"id: \n\n", id="id-reset"),
    pytest.param(Event(retry=0), b"retry: 0\n\n", id="retry-zero"),
    pytest.param(Event(retry=1500), b"retry: 1500\n\n", id="retry"),
    pytest.param(Event(comment="ping"), b": ping\n\n", id="comment"),
    pytest.param(Event(comment=""), b":\n\n", id="empty-comment"),
    pytest.param(Event(comment="a\r\n\nb"), b": a\n:\n: b\n\n", id="multiline-comment"),
    pytest.param(
        Event(data="d", event="e", id="1", retry=10, comment="c"),
        b": c\nretry: 10\nevent: e\nid: 1\ndata: d\n\n",
        id="all-fields",
    ),
    pytest.param(Event(), b"", id="nothing"),
] + [
    pytest.param(
        Event(data=f"a{char}b"), f"data: a{char}b\n\n".encode(), id=f"no-split-U+{ord(char):04X}"
    )
    for char in NOT_LINE_BREAKS
]


@pytest.mark.parametrize(("event", "wire"), ENCODE_TABLE)
def test_encode_wire_table(event: Event, wire: bytes) -> None:
    assert encode(event) == wire


ENCODE_DATA_TABLE = [
    pytest.param(("x", None, None), b"data: x\n\n", id="data"),
    pytest.param(("", None, None), b"data: \n\n", id="empty"),
    pytest.param(
        ("a\r\nb\rc\n", None, None), b"data: a\ndata: b\ndata: c\ndata: \n\n", id="breaks"
    ),
    pytest.param(("a\u2028b", None, None), "data: a\u2028b\n\n".encode(), id="U+2028"),
    pytest.param(("x", "e", None), b"event: e\ndata: x\n\n", id="event"),
    pytest.param(("x", None, "1"), b"id: 1\ndata: x\n\n", id="id"),
    pytest.param(("x", "e", "1"), b"event: e\nid: 1\ndata: x\n\n", id="event-id"),
    pytest.param((" x", " e", " 1"), b"event:  e\nid:  1\ndata:  x\n\n", id="spaces"),
    pytest.param(("x", "", ""), b"event: \nid: \ndata: x\n\n", id="empty-event-id"),
]


@pytest.mark.parametrize(("args", "wire"), ENCODE_DATA_TABLE)
def test_encode_data_wire_table(args: tuple[str, str | None, str | None], wire: bytes) -> None:
    assert encode_data(*args) == wire


@pytest.mark.parametrize(
    ("text", "wire"),
    [
        pytest.param(None, b":\n\n", id="default"),
        pytest.param("", b":\n\n", id="empty"),
        pytest.param("keep-alive", b": keep-alive\n\n", id="text"),
        pytest.param("a\nb", b": a\n: b\n\n", id="lf"),
        pytest.param("a\rb\r\n", b": a\n: b\n:\n\n", id="cr-crlf"),
    ],
)
def test_comment_wire_table(text: str | None, wire: bytes) -> None:
    assert (comment() if text is None else comment(text)) == wire


ENCODE_ERRORS = [
    pytest.param(Event(data="x", event="a\nb"), "event", "LF (U+000A)", id="event-lf"),
    pytest.param(Event(data="x", event="a\rb"), "event", "CR (U+000D)", id="event-cr"),
    pytest.param(Event(data="x", event="\r\n"), "event", "CR (U+000D)", id="event-crlf"),
    pytest.param(Event(event="\n"), "event", "LF (U+000A)", id="event-without-data"),
    pytest.param(Event(data="x", id="a\nb"), "id", "LF (U+000A)", id="id-lf"),
    pytest.param(Event(data="x", id="a\rb"), "id", "CR (U+000D)", id="id-cr"),
    pytest.param(Event(data="x", id="a\0b"), "id", "NUL (U+0000)", id="id-nul"),
    pytest.param(Event(id="\0"), "id", "NUL (U+0000)", id="id-only-nul"),
    pytest.param(Event(retry=-1), "retry", "-1", id="retry-negative"),
    pytest.param(Event(retry=True), "retry", "True", id="retry-bool"),
    pytest.param(Event(retry=False), "retry", "False", id="retry-false"),
    pytest.param(Event(retry=1.5), "retry", "1.5", id="retry-float"),  # type: ignore[arg-type]
    pytest.param(Event(retry="10"), "retry", "'10'", id="retry-str"),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(("event", "field", "detail"), ENCODE_ERRORS)
def test_encode_illegal_field_raises(event: Event, field: str, detail: str) -> None:
    with pytest.raises(ProtocolError) as info:
        encode(event)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert detail in str(info.value)


@pytest.mark.parametrize(
    ("args", "field", "char"),
    [
        pytest.param(("x", "a\nb", None), "event", "LF (U+000A)", id="event-lf"),
        pytest.param(("x", "a\rb", None), "event", "CR (U+000D)", id="event-cr"),
        pytest.param(("x", None, "a\nb"), "id", "LF (U+000A)", id="id-lf"),
        pytest.param(("x", None, "a\rb"), "id", "CR (U+000D)", id="id-cr"),
        pytest.param(("x", None, "a\0b"), "id", "NUL (U+0000)", id="id-nul"),
        pytest.param(("x", "ok", "\0"), "id", "NUL (U+0000)", id="id-nul-after-event"),
    ],
)
def test_encode_data_illegal_field_raises(
    args: tuple[str, str | None, str | None], field: str, char: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        encode_data(*args)
    assert info.value.field == field
    assert str(info.value).startswith(f"{field}: ")
    assert char in str(info.value)


def test_protocol_error_is_a_value_error() -> None:
    with pytest.raises(ValueError, match=r"^id: must not contain NUL \(U\+0000\)"):
        encode(Event(data="x", id="\0"))


# --- Decoder -------------------------------------------------------------------------------------

DECODE_TABLE = [
    # 9.2.5 field parsing: one space after the colon is removed, and only one.
    pytest.param(b"data: hello\n\n", [ev("hello")], id="data"),
    pytest.param(b"data:hello\n\n", [ev("hello")], id="no-space"),
    pytest.param(b"data:  two\n\n", [ev(" two")], id="only-one-space-removed"),
    pytest.param(b"data:\tx\n\n", [ev("\tx")], id="tab-kept"),
    pytest.param(b"data: a:b\n\n", [ev("a:b")], id="colon-in-value"),
    pytest.param(b"data\n\n", [ev("")], id="no-colon-empty-value"),
    pytest.param(b"data:\n\n", [ev("")], id="empty-value"),
    pytest.param(b"data\ndata\n\n", [ev("\n")], id="two-empty-lines"),
    pytest.param(b"data: a\ndata: b\n\n", [ev("a\nb")], id="lines-joined-by-lf"),
    pytest.param(b"data: a\ndata:\n\n", [ev("a\n")], id="trailing-empty-line"),
    pytest.param(b"data: a\x00b\n\n", [ev("a\x00b")], id="nul-in-data"),
    # 9.2.5 line breaks: CRLF, lone CR, lone LF, and nothing else.
    pytest.param(b"data: a\r\n\r\n", [ev("a")], id="crlf"),
    pytest.param(b"data: a\r\r", [ev("a")], id="cr"),
    pytest.param(b"data: a\rdata: b\ndata: c\r\n\n", [ev("a\nb\nc")], id="mixed-breaks"),
    pytest.param(b"data: a\n\r\n", [ev("a")], id="lf-then-crlf"),
    pytest.param(b"data: a\r\n\rdata: b\r\n\n", [ev("a"), ev("b")], id="crlf-then-cr"),
    *[
        pytest.param(
            f"data: a{char}b\n\n".encode(), [ev(f"a{char}b")], id=f"no-split-U+{ord(char):04X}"
        )
        for char in NOT_LINE_BREAKS
    ],
    # 9.2.5: one leading BOM is ignored; a second one, or one later, is part of a field name.
    pytest.param(b"\xef\xbb\xbfdata: 1\n\n", [ev("1")], id="bom"),
    pytest.param(b"\xef\xbb\xbf\xef\xbb\xbfdata: 1\n\ndata: 2\n\n", [ev("2")], id="double-bom"),
    pytest.param(b"data: 1\n\n\xef\xbb\xbfdata: 2\n\n", [ev("1")], id="bom-later"),
    pytest.param(b"\xff\xfedata: 1\n\ndata: 2\n\n", [ev("2")], id="utf16-bom-is-not-a-bom"),
    # Comments and unknown fields.
    pytest.param(b": hi\ndata: x\n\n", [ev("x")], id="comment"),
    pytest.param(b"data: a\n:\ndata: b\n\n", [ev("a\nb")], id="comment-between-data"),
    pytest.param(b":\n\n: x\n\n", [], id="comments-only"),
    pytest.param(b"foo: bar\ndata: x\n\n", [ev("x")], id="unknown-field"),
    pytest.param(b"Data: x\nDATA: y\n\n", [], id="names-are-case-sensitive"),
    pytest.param(b"data : x\n\n", [], id="space-before-colon"),
    pytest.param(b" data: x\n\n", [], id="leading-space-in-name"),
    # 9.2.6 event type: empty means "message"; reset after every blank line.
    pytest.param(b"event: add\ndata: x\n\n", [ev("x", "add")], id="event"),
    pytest.param(b"event:  add\ndata: x\n\n", [ev("x", " add")], id="event-one-space"),
    pytest.param(b"event:\ndata: x\n\n", [ev("x")], id="empty-event"),
    pytest.param(b"event\ndata: x\n\n", [ev("x")], id="event-no-colon"),
    pytest.param(b"event: a\nevent: b\ndata: x\n\n", [ev("x", "b")], id="last-event-wins"),
    pytest.param(b"event: a\ndata: 1\n\ndata: 2\n\n", [ev("1", "a"), ev("2")], id="event-reset"),
    pytest.param(b"event: a\n\ndata: 2\n\n", [ev("2")], id="event-reset-without-dispatch"),
    # 9.2.6 no data, no event.
    pytest.param(b"event: x\n\n", [], id="event-only"),
    pytest.param(b"id: 1\n\n", [], id="id-only"),
    pytest.param(b"retry: 5\n\n", [], id="retry-only"),
    pytest.param(b"\n\n\n", [], id="blank-lines"),
    # 9.2.6 id: persists across events; empty resets; NUL ignores the field.
    pytest.param(b"id: 7\ndata: x\n\n", [ev("x", id="7")], id="id"),
    pytest.param(b"id:  7\ndata: x\n\n", [ev("x", id=" 7")], id="id-one-space"),
    pytest.param(
        b"id: 7\ndata: a\n\ndata: b\n\n", [ev("a", id="7"), ev("b", id="7")], id="id-persists"
    ),
    pytest.param(b"id: 1\n\ndata: x\n\n", [ev("x", id="1")], id="id-only-block-persists"),
    pytest.param(b"id: 1\ndata: a\n\nid\ndata: b\n\n", [ev("a", id="1"), ev("b")], id="id-reset"),
    pytest.param(b"id: 1\ndata: a\n\nid:\ndata: b\n\n", [ev("a", id="1"), ev("b")], id="id-empty"),
    pytest.param(
        b"id: 1\ndata: a\n\nid: 2\x003\ndata: b\n\n",
        [ev("a", id="1"), ev("b", id="1")],
        id="id-with-nul-ignored",
    ),
    pytest.param(b"data: x\nid: 9\n\n", [ev("x", id="9")], id="id-after-data"),
    # 9.2.5: at the end of the stream a partial event is discarded.
    pytest.param(b"data: a\n\ndata: b\n", [ev("a")], id="partial-event-dropped"),
    pytest.param(b"data: a\n\ndata: b", [ev("a")], id="partial-line-dropped"),
    pytest.param(b"data: a\r\n", [], id="no-blank-line"),
    pytest.param(b"", [], id="empty-stream"),
    # UTF-8 decode with replacement (9.2.5 decodes the stream with "UTF-8 decode").
    pytest.param(b"data: \xff\n\n", [ev("\ufffd")], id="invalid-byte"),
    pytest.param(b"data: a\xc3(b\n\n", [ev("a\ufffd(b")], id="bad-continuation"),
    pytest.param(b"data: \xe2\x82\n\n", [ev("\ufffd")], id="truncated-sequence"),
    pytest.param(b"data: \xed\xa0\x80\n\n", [ev("\ufffd" * 3)], id="encoded-surrogate"),
    pytest.param(b"data: \xc0\xaf\n\n", [ev("\ufffd" * 2)], id="overlong"),
    pytest.param(b"da\xfeta: x\n\n", [], id="invalid-byte-in-name"),
]


@pytest.mark.parametrize(("wire", "events"), DECODE_TABLE)
def test_decode_wire_table(wire: bytes, events: list[Event]) -> None:
    assert decode(wire) == events


@pytest.mark.parametrize(("wire", "events"), DECODE_TABLE)
def test_decoder_byte_at_a_time_matches_whole(wire: bytes, events: list[Event]) -> None:
    assert feed_all([wire[i : i + 1] for i in range(len(wire))])[0] == events


RETRY_TABLE = [
    pytest.param(b"retry: 1500\n", 1500, id="digits"),
    pytest.param(b"retry:0\n", 0, id="zero"),
    pytest.param(b"retry: 007\n", 7, id="leading-zeros"),
    pytest.param(b"retry: 99999999999999999999\n", 99999999999999999999, id="huge"),
    pytest.param(b"retry: 10\nretry: 20\n", 20, id="last-wins"),
    pytest.param(b"retry: 10\nretry: x\n", 10, id="bogus-keeps-previous"),
    pytest.param(b"retry: 10\n\ndata: a\n\n", 10, id="persists"),
    pytest.param(b"retry: -1\n", None, id="negative"),
    pytest.param(b"retry: +1\n", None, id="plus"),
    pytest.param(b"retry: 1.5\n", None, id="decimal"),
    pytest.param(b"retry: 1_000\n", None, id="underscore"),
    pytest.param(b"retry:  1\n", None, id="second-space"),
    pytest.param(b"retry: 1 \n", None, id="trailing-space"),
    pytest.param("retry: \u0661\u0662\n".encode(), None, id="arabic-indic-digits"),
    pytest.param("retry: \u00b2\n".encode(), None, id="superscript"),
    pytest.param(b"retry:\n", None, id="empty"),
    pytest.param(b"retry\n", None, id="no-colon"),
]


@pytest.mark.parametrize(("wire", "retry"), RETRY_TABLE)
def test_decoder_retry_ascii_digits_only(wire: bytes, retry: int | None) -> None:
    assert feed_all([wire])[1].retry == retry


LAST_EVENT_ID_TABLE = [
    pytest.param(b"", "", id="initial"),
    pytest.param(b"id: 1\ndata: a\n\n", "1", id="dispatched"),
    pytest.param(b"id: 1\n\n", "1", id="id-only-block"),
    pytest.param(b"id: 1\n\ndata: a\n\n", "1", id="persists"),
    pytest.param(b"id: 1\n\nid\n\n", "", id="reset"),
    pytest.param(b"id: 1\n\nid: 2\x00\n\n", "1", id="nul-ignored"),
    # 9.2.6: the id buffer becomes the last event ID string only on a blank line; a browser
    # reconnecting after a cut mid-event sends the previous id.
    pytest.param(b"id: 1\ndata: a\n", "", id="partial-not-committed"),
    pytest.param(b"id: 1\n\nid: 2\ndata: b\n", "1", id="partial-keeps-previous"),
]


@pytest.mark.parametrize(("wire", "last_event_id"), LAST_EVENT_ID_TABLE)
def test_decoder_last_event_id_commits_on_blank_line(wire: bytes, last_event_id: str) -> None:
    assert feed_all([wire])[1].last_event_id == last_event_id


CHUNKED_TABLE = [
    pytest.param([b"data: a\r", b"\ndata: b\r\n\r\n"], [ev("a\nb")], id="crlf-split"),
    pytest.param([b"data: a\r", b"", b"\ndata: b\n\n"], [ev("a\nb")], id="crlf-split-empty-chunk"),
    pytest.param([b"data: a\r", b"\r"], [ev("a")], id="cr-cr-split"),
    pytest.param([b"data: a\r\n\r", b"\n"], [ev("a")], id="blank-crlf-split"),
    pytest.param([b"data: a\r", b"\n", b"\n"], [ev("a")], id="crlf-then-lf"),
    pytest.param([b"data: \xe2", b"\x82", b"\xac\n\n"], [ev("\u20ac")], id="3-byte-split"),
    pytest.param([b"data: \xf0\x9f", b"\x98\x80\n\n"], [ev("\U0001f600")], id="4-byte-split"),
    pytest.param(
        [b"data: a\r", b"data: \xe2\x82", b"\xac\n\n"], [ev("a\n\u20ac")], id="cr-then-char"
    ),
    pytest.param([b"data: a\r", b"\xe2\x82", b"\xac\n\n"], [ev("a")], id="cr-then-split-char"),
    pytest.param(
        [b"data: a\xff", b"b\xe2\x82", b"\xac\n\n"], [ev("a\ufffdb\u20ac")], id="bad-then-split"
    ),
    pytest.param([b"\xef", b"\xbb\xbfdata: 1\n\n"], [ev("1")], id="bom-split"),
    pytest.param([b"", b"\xef\xbb\xbfdata: 1\n\n"], [ev("1")], id="bom-after-empty-chunk"),
    pytest.param(
        [b"\xef\xbb\xbf", b"\xef\xbb\xbfdata: 1\n\ndata: 2\n\n"], [ev("2")], id="bom-once"
    ),
    pytest.param([b"da", b"ta: 1\n", b"\n"], [ev("1")], id="split-name"),
]


@pytest.mark.parametrize(("chunks", "events"), CHUNKED_TABLE)
def test_decoder_chunk_boundaries(chunks: list[bytes], events: list[Event]) -> None:
    assert feed_all(chunks)[0] == events


def test_decoder_feed_returns_events_as_they_complete() -> None:
    decoder = Decoder()
    assert decoder.feed(b"data: a\n") == []
    assert decoder.feed(b"\ndata: b\n") == [ev("a")]
    assert decoder.feed(b"\n") == [ev("b")]


def test_decoder_close_discards_partial_event() -> None:
    decoder = Decoder()
    decoder.feed(b"event: e\nid: 3\ndata: a\n")
    assert decoder.close() == []
    assert decoder.feed(b"\n") == []
    assert decoder.last_event_id == ""


def test_bom_constant_is_u_feff() -> None:
    assert BOM == "\ufeff"


# --- Round trips ---------------------------------------------------------------------------------

# Text that hits the interesting characters often: line breaks, spaces, colons, NUL, BOM, the
# characters str.splitlines() would wrongly break on, and anything else.
special = st.sampled_from(["\r", "\n", "\r\n", " ", ":", "\0", BOM, "\u20ac", *NOT_LINE_BREAKS])
texts = st.lists(special | st.text(max_size=4)).map("".join)
no_breaks = texts.map(lambda s: s.replace("\r", "").replace("\n", ""))
event_types = no_breaks.filter(bool)
event_ids = no_breaks.map(lambda s: s.replace("\0", "")).filter(bool)
retries = st.integers(min_value=0, max_value=2**40)

events = st.builds(
    Event,
    data=texts,
    event=st.none() | event_types,
    id=st.none() | event_ids,
    retry=st.none() | retries,
    comment=st.none() | texts,
)


def lf(text: str) -> str:
    """``text`` with CRLF and CR as LF: 9.2.6 joins data lines with LF, whatever ended them."""
    return re.sub(r"\r\n?", "\n", text)


def expected(stream: list[Event]) -> list[Event]:
    """What a spec decoder reports for encoded ``stream``: the id in force, no retry/comment."""
    result, last_id = [], None
    for event in stream:
        last_id = event.id if event.id is not None else last_id
        result.append(ev(lf(event.data or ""), event.event, last_id))
    return result


@given(events)
def test_decode_encode_round_trip(event: Event) -> None:
    decoder = Decoder()
    round_trip = dataclasses.replace(event, data=lf(event.data or ""), retry=None, comment=None)
    assert decoder.feed(encode(event)) == [round_trip]
    assert decoder.retry == event.retry


@given(st.lists(events, max_size=8))
def test_decode_encode_round_trip_stream(stream: list[Event]) -> None:
    wire = b"".join(encode(event) for event in stream)
    decoder = Decoder()
    assert decoder.feed(wire) == expected(stream)
    assert decoder.last_event_id == next((e.id for e in reversed(stream) if e.id), "")
    assert decoder.retry == next((e.retry for e in reversed(stream) if e.retry is not None), None)


@given(st.lists(events, max_size=6), st.lists(st.integers(min_value=0), max_size=12))
def test_decoder_random_chunks_same_events(stream: list[Event], cuts: list[int]) -> None:
    wire = b"".join(encode(event) for event in stream)
    assert feed_all(split_at(wire, cuts))[0] == expected(stream)


@given(texts, st.none() | event_types, st.none() | event_ids)
def test_encode_data_equals_encode(data: str, event: str | None, id: str | None) -> None:
    assert encode_data(data, event, id) == encode(Event(data, event, id))


@given(events)
def test_encode_lines_are_fields_and_never_hold_cr(event: Event) -> None:
    wire = encode(event).decode()
    assert "\r" not in wire
    assert wire.endswith("\n\n")
    lines = wire[:-2].split("\n")
    prefixes = (": ", "retry: ", "event: ", "id: ", "data: ")
    assert all(line == ":" or line.startswith(prefixes) for line in lines)


@given(texts, st.lists(events, max_size=4))
def test_comment_is_invisible_to_decoder(text: str, stream: list[Event]) -> None:
    wire = comment(text).join(encode(event) for event in stream)
    assert decode(comment(text) + wire + comment(text)) == expected(stream)


# Bytes that are mostly SSE syntax, so the decoder's every branch sees arbitrary interleavings.
syntax = st.sampled_from(
    [b"data", b"event", b"id", b"retry", b":", b" ", b"\r", b"\n", b"\r\n", b"1", b"x",
     b"\x00", b"\xef\xbb\xbf", b"\xe2\x82", b"\xac", b"\xff", b"\xf0\x9f\x98"]
)  # fmt: skip
wires = st.lists(syntax | st.binary(max_size=3)).map(b"".join)


@given(wires, st.lists(st.integers(min_value=0), max_size=12))
def test_decoder_any_bytes_chunking_is_invisible(wire: bytes, cuts: list[int]) -> None:
    whole, whole_decoder = feed_all([wire])
    chunked, chunked_decoder = feed_all(split_at(wire, cuts))
    assert chunked == whole
    assert chunked_decoder.last_event_id == whole_decoder.last_event_id
    assert chunked_decoder.retry == whole_decoder.retry
    for event in whole:
        assert event.data is not None
        assert event.event != ""
        assert event.id is None or (event.id and "\0" not in event.id)


# --- httpx-sse as an independent oracle ----------------------------------------------------------
#
# httpx-sse 0.4 departs from 9.2.5/9.2.6 in ways the oracle must steer around:
# - it dispatches a block with no data field (``id: 1\n\n``, ``event: x\n\n``) as an event with
#   data "", where the spec dispatches nothing: every oracle event has data;
# - it parses ``retry`` with int(), so "+5", " 5" and non-ASCII digits count, and reports retry
#   per event instead of keeping the reconnection time: only non-negative ints are generated;
# - it never strips a BOM (the encoder never writes one);
# - it reports event "" as "message" and a missing id as "": normalised below.
# Line splitting agrees with the spec (CRLF, CR, LF only, a CR at a chunk end held back).


def httpx_sse_events(text_chunks: list[str]) -> list[tuple[str, str, str, int | None]]:
    """Run text through httpx-sse's line and event decoders."""
    lines, events = SSELineDecoder(), SSEDecoder()
    split = [line for chunk in text_chunks for line in lines.decode(chunk)] + lines.flush()
    decoded = (events.decode(line) for line in split)
    return [(e.data, e.event, e.id, e.retry) for e in decoded if e is not None]


@given(st.lists(events, max_size=6), st.lists(st.integers(min_value=0), max_size=8))
def test_decoder_agrees_with_httpx_sse(stream: list[Event], cuts: list[int]) -> None:
    text = b"".join(encode(event) for event in stream).decode()
    bounds = [0, *sorted(cut % (len(text) + 1) for cut in cuts), len(text)]
    oracle = httpx_sse_events([text[a:b] for a, b in itertools.pairwise(bounds)])
    ours = decode(text.encode())
    assert [(e.data, e.event or "message", e.id or "") for e in ours] == [o[:3] for o in oracle]
    assert [o[3] for o in oracle] == [e.retry for e in stream]


@pytest.mark.parametrize(
    "wire",
    [
        pytest.param(wire, id=param_id)
        for param_id, wire in [
            ("crlf", "data: a\r\ndata: b\r\n\r\n"),
            ("cr", "data: a\rdata: b\r\r"),
            ("u2028", "data: a\u2028b\x85c\x0bd\n\n"),
            ("spaces", "data:  a\nevent:  e\nid:  1\n\n"),
            ("nul-id", "id: 1\ndata: a\n\nid: \x00\ndata: b\n\n"),
        ]
    ],
)
def test_decoder_agrees_with_httpx_sse_on_wire(wire: str) -> None:
    ours = [(e.data, e.event or "message", e.id or "") for e in decode(wire.encode())]
    assert ours == [o[:3] for o in httpx_sse_events([wire])]
