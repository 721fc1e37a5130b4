"""The Server-Sent Events wire format: a strict encoder and a spec-following decoder.

Standard library only, no I/O: text in, bytes out, and bytes in, events out. The rules cited
below are from WHATWG HTML, section 9.2 "Server-sent events" (9.2.5 "Parsing an event stream",
9.2.6 "Interpreting an event stream").

Deliberate divergences, all on the encoding side ("strict out, lenient in"):

- The encoder refuses what the decoder would silently misread (CR or LF in ``event`` or ``id``,
  NUL in ``id``, a negative or non-integer ``retry``) instead of escaping it.
- The encoder always writes ``field: value`` with one space, so a value that itself starts with
  a space survives the decoder's removal of exactly one leading space.
"""

from __future__ import annotations

import codecs
import re
from dataclasses import dataclass

__all__ = [
    "BOM",
    "Decoder",
    "Event",
    "ProtocolError",
    "check_retry",
    "comment",
    "decode",
    "encode",
    "encode_data",
]

BOM = "\ufeff"

# 9.2.5: lines end with CRLF, a lone LF or a lone CR. str.splitlines() would also split on
# U+2028, U+0085, form feeds and more, which the spec treats as ordinary characters.
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_CHAR_NAMES = {"\r": "CR (U+000D)", "\n": "LF (U+000A)", "\0": "NUL (U+0000)"}


class ProtocolError(ValueError):
    """An event that cannot be written to the wire as asked; names the field and the character."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class Event:
    """One server-sent event (or, with only ``comment`` set, a comment line).

    ``data`` is the text the client's ``MessageEvent.data`` will hold; ``None`` writes no data
    field. ``event`` is the type (``None`` means ``message``), ``id`` sets the client's last
    event id, ``retry`` the reconnection time in milliseconds.
    """

    data: str | None = None
    event: str | None = None
    id: str | None = None
    retry: int | None = None
    comment: str | None = None


def _refuse(field: str, value: str, chars: str) -> None:
    for char in chars:
        if char in value:
            raise ProtocolError(field, f"must not contain {_CHAR_NAMES[char]}: {value!r}")


def check_retry(retry: object) -> int:
    """Return ``retry`` if it is a valid ``retry`` field value, else raise ProtocolError."""
    # 9.2.6: only ASCII digits set the reconnection time; a bool is an int but never meant.
    if isinstance(retry, bool) or not isinstance(retry, int):
        raise ProtocolError("retry", f"must be a non-negative integer, got {retry!r}")
    if retry < 0:
        raise ProtocolError("retry", f"must be a non-negative integer, got {retry}")
    return retry


def encode_data(data: str, event: str | None = None, id: str | None = None) -> bytes:
    """Encode one event with data, an optional type and id: the hot path of every push.

    Equivalent to ``encode(Event(data, event, id))`` without building the dataclass.
    """
    parts = []
    if event is not None:
        if "\n" in event or "\r" in event:
            _refuse("event", event, "\r\n")
        parts.append(f"event: {event}\n")
    if id is not None:
        if "\n" in id or "\r" in id or "\0" in id:
            _refuse("id", id, "\r\n\0")
        parts.append(f"id: {id}\n")
    if "\n" in data or "\r" in data:
        for line in _LINE_BREAK.split(data):
            parts.append(f"data: {line}\n")
    else:
        parts.append(f"data: {data}\n")
    parts.append("\n")
    return "".join(parts).encode()


def encode(event: Event) -> bytes:
    """Encode an event to UTF-8 bytes, ending with the blank line that dispatches it.

    Raises ProtocolError for CR/LF in ``event`` or ``id``, NUL in ``id``, or a ``retry`` that
    is not a non-negative integer. An event with nothing set encodes to ``b""``.
    """
    lines: list[str] = []
    if event.comment is not None:
        # A comment line is ":" followed by anything but a line break: split like data.
        lines.extend(f": {line}" if line else ":" for line in _LINE_BREAK.split(event.comment))
    if event.retry is not None:
        lines.append(f"retry: {check_retry(event.retry)}")
    if event.event is not None:
        _refuse("event", event.event, "\r\n")
        lines.append(f"event: {event.event}")
    if event.id is not None:
        _refuse("id", event.id, "\r\n\0")
        lines.append(f"id: {event.id}")
    if event.data is not None:
        lines.extend(f"data: {line}" for line in _LINE_BREAK.split(event.data))
    if not lines:
        return b""
    lines.append("\n")
    return "\n".join(lines).encode()


def comment(text: str = "") -> bytes:
    """Encode a comment (``: text``), e.g. a keep-alive; clients ignore it."""
    return encode(Event(comment=text)) if text else b":\n\n"


class Decoder:
    """An incremental decoder that follows 9.2.5 and 9.2.6 exactly.

    Feed it bytes as they arrive; it returns the events dispatched so far. Comments are not
    events and are dropped; the reconnection time from ``retry`` is kept in ``retry``. Like a
    browser, it remembers the last event id across events (``last_event_id``, set when a blank
    line ends a block, so what to send as Last-Event-ID) and gives each dispatched event the id
    in force, and it drops a partial event when the stream ends.
    """

    def __init__(self) -> None:
        self._buffer = ""
        self._pending_cr = False
        self._started = False
        # 9.2.5: the stream is decoded with "UTF-8 decode": a character split across chunks waits
        # for its tail, and invalid bytes become U+FFFD without swallowing what follows.
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._data: list[str] = []
        self._has_data = False
        self._event_type = ""
        # 9.2.6: an ``id`` field sets the last event ID *buffer*; the last event ID string (what a
        # client sends as Last-Event-ID) only takes its value when a blank line dispatches.
        self._id_buffer = ""
        self.last_event_id = ""
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[Event]:
        """Decode a chunk of the stream, returning the events it completed."""
        text = self._utf8.decode(chunk)
        if not self._started and text:
            self._started = True
            # 9.2.5: one leading U+FEFF BOM is ignored.
            if text.startswith(BOM):
                text = text[1:]
        if not text:
            # Nothing decoded yet (an empty chunk or part of a character): keep any pending CR.
            return []
        if self._pending_cr and text.startswith("\n"):
            # The LF of a CRLF split across two chunks.
            text = text[1:]
        self._pending_cr = False
        self._buffer += text
        events: list[Event] = []
        lines = _LINE_BREAK.split(self._buffer)
        self._buffer = lines.pop()
        if self._buffer == "" and text.endswith("\r"):
            self._pending_cr = True
        for line in lines:
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        return events

    def close(self) -> list[Event]:
        """End of stream: 9.2.5 says a partial event is discarded, so this returns ``[]``."""
        self._buffer = ""
        self._pending_cr = False
        self._utf8.reset()
        self._data = []
        self._has_data = False
        self._event_type = ""
        self._id_buffer = self.last_event_id
        return []

    def _process_line(self, line: str) -> Event | None:
        if line == "":
            return self._dispatch()
        if line.startswith(":"):
            return None
        name, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if name == "event":
            self._event_type = value
        elif name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif name == "retry" and value.isascii() and value.isdigit():
            # 9.2.6: ASCII digits only ("" is not); anything else leaves the time unchanged.
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        # 9.2.6: the id is committed first, so an id-only block still moves the last event ID.
        self.last_event_id = self._id_buffer
        # 9.2.6: an event with an empty data buffer resets the type and is not dispatched.
        if not self._has_data:
            self._event_type = ""
            return None
        event = Event(
            data="\n".join(self._data),
            event=self._event_type or None,
            id=self.last_event_id or None,
        )
        self._data = []
        self._has_data = False
        self._event_type = ""
        return event


def decode(stream: bytes) -> list[Event]:
    """Decode a complete stream; a trailing partial event is dropped as the spec says."""
    decoder = Decoder()
    events = decoder.feed(stream)
    decoder.close()
    return events
