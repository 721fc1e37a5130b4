"""The reading side of an in-process stream: body chunks in, parsed events out, with time-outs.

A transport (``stream_app.testing.exchange``) puts what the application sends on a queue: each
body chunk, then ``END`` when the response is complete, or the exception that ended it. The
reader decodes the chunks with ``stream_app.protocol.Decoder`` and says, when it waits too long,
what it was waiting for.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final

from ..protocol import Decoder, Event

if TYPE_CHECKING:
    from django.http import HttpResponseBase

__all__ = ["END", "Headers", "NotAnEventStream", "StreamReader", "StreamTimeout"]

#: Put on the queue when the response is complete.
END: Final = object()
#: The longest part of a body shown in an error message.
SHOWN_BYTES = 300


class StreamTimeout(TimeoutError):
    """Nothing came within the time-out; the message names what was awaited, and from what."""


class NotAnEventStream(AssertionError):
    """Events were asked of a response that is not a ``200 text/event-stream`` stream."""


class Headers(Mapping[str, str]):
    """Response headers, looked up by name in any case (``headers["content-type"]``)."""

    def __init__(self, items: Iterable[tuple[str, str]]) -> None:
        self._items = {name.lower(): (name, value) for name, value in items}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()][1]

    def __iter__(self) -> Iterator[str]:
        return (name for name, _ in self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({dict(self.items())!r})"


class StreamReader:
    """A response read in process: ``status_code``, ``headers``, and its events.

    Iterate it (``async for event in events``) or ask for ``await events.next()``,
    ``take(n)``, ``until("done")``, ``read_all()``. Every wait has a time-out (the ``timeout``
    given to ``read_stream`` unless a call gives its own) and raises ``StreamTimeout`` naming
    what it waited for. A response that is not a stream (a 4xx, JSON, HTML) is read whole:
    its body is ``content`` (``text``, ``json()``), and asking it for events raises
    ``NotAnEventStream`` with its status, type and body.
    """

    def __init__(self, label: str, timeout: float, start_timeout: float | None = None) -> None:
        #: ``METHOD path``, for error messages.
        self.label = label
        self.timeout = timeout
        #: The wait for the status and headers (``read_stream``'s ``start_timeout``).
        self.start_timeout = start_timeout or timeout
        self.status_code = 0
        self.headers = Headers(())
        #: Django's response object, when read through ``AsyncClient`` (None through ASGI).
        self.response: HttpResponseBase | None = None
        #: The whole body of a response that is not an event stream (b"" for a stream).
        self.content = b""
        #: The raw body chunks of a stream, as the application sent them.
        self.chunks: list[bytes] = []
        #: Every event dispatched so far, in order.
        self.received: list[Event] = []
        self.decoder = Decoder()
        self.queue: asyncio.Queue[object] = asyncio.Queue()
        self.ended = False
        self._pending: list[Event] = []
        self._unusable: str | None = None

    def __repr__(self) -> str:
        return f"<StreamReader {self.label} {self.status_code} received={len(self.received)}>"

    # -- the response -------------------------------------------------------------------------

    @property
    def is_event_stream(self) -> bool:
        """True for a ``200`` response of type ``text/event-stream`` (what EventSource opens)."""
        kind = self.headers.get("content-type", "").split(";")[0].strip().lower()
        return self.status_code == 200 and kind == "text/event-stream"

    @property
    def text(self) -> str:
        """``content`` as UTF-8 text."""
        return self.content.decode("utf-8", errors="replace")

    def json(self) -> Any:
        """``content`` parsed as JSON (the body of a refusal, say)."""
        return json.loads(self.content)

    @property
    def last_event_id(self) -> str:
        """What a browser would send as ``Last-Event-ID`` on reconnecting now."""
        return self.decoder.last_event_id

    @property
    def retry(self) -> int | None:
        """The last ``retry`` field received (milliseconds), if any."""
        return self.decoder.retry

    def refuse_events(self, reason: str) -> None:
        """Make every request for events raise ``NotAnEventStream`` with ``reason``."""
        self._unusable = reason

    async def read_body(self, timeout: float) -> None:
        """Read a response that is not a stream to its end into ``content``."""
        parts = []
        while (chunk := await self._chunk(timeout, "the end of the response body")) is not None:
            parts.append(chunk)
        self.content = b"".join(parts)

    # -- events -------------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[Event]:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self.next()
        except EOFError:
            raise StopAsyncIteration from None

    async def next(self, timeout: float | None = None) -> Event:
        """The next event; ``EOFError`` if the stream ends first."""
        self._check_stream()
        total = timeout or self.timeout
        deadline = asyncio.get_running_loop().time() + total
        while not self._pending:
            left = deadline - asyncio.get_running_loop().time()
            chunk = await self._chunk(left, f"event {len(self.received) + 1}", total)
            if chunk is None:
                raise EOFError(f"{self.label}: the stream ended after {self._so_far()}")
            self.chunks.append(chunk)
            self._pending.extend(self.decoder.feed(chunk))
        event = self._pending.pop(0)
        self.received.append(event)
        return event

    async def take(self, count: int, timeout: float | None = None) -> list[Event]:
        """The next ``count`` events (``timeout`` for each)."""
        return [await self.next(timeout) for _ in range(count)]

    async def until(self, event: str, timeout: float | None = None) -> list[Event]:
        """The events up to and including the next one of type ``event`` (``"message"`` for
        untyped ones); ``timeout`` for the whole wait."""
        self._check_stream()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + (timeout or self.timeout)
        events: list[Event] = []
        while True:
            try:
                got = await self.next(max(0.0, deadline - loop.time()))
            except StreamTimeout as exc:
                raise StreamTimeout(
                    f"{self.label}: no {event!r} event within {timeout or self.timeout:g}s; "
                    f"{self._so_far()}"
                ) from exc
            events.append(got)
            if (got.event or "message") == event:
                return events

    async def read_all(self, timeout: float | None = None) -> list[Event]:
        """Every event until the application ends the stream (``timeout`` for each)."""
        events: list[Event] = []
        while True:
            try:
                events.append(await self.next(timeout))
            except EOFError:
                return events

    # -- the queue ----------------------------------------------------------------------------

    async def _chunk(
        self, timeout: float, awaited: str, total: float | None = None
    ) -> bytes | None:
        """The next body chunk, None at the end; raises what ended the response. ``awaited``
        and ``total`` (the whole wait, of which ``timeout`` is what is left) name the wait."""
        if self.ended:
            return None
        try:
            item = await asyncio.wait_for(self.queue.get(), max(timeout, 0.0))
        except TimeoutError:
            raise StreamTimeout(
                f"{self.label}: {awaited} did not come within {total or timeout:g}s; "
                f"{self._so_far()}"
            ) from None
        if item is END:
            self.ended = True
            return None
        if isinstance(item, BaseException):
            self.ended = True
            raise item
        assert isinstance(item, bytes)
        return item

    def _check_stream(self) -> None:
        if self._unusable is not None:
            raise NotAnEventStream(f"{self.label}: {self._unusable}")
        if not self.is_event_stream:
            content_type = self.headers.get("content-type", "no Content-Type")
            body = self.content[:SHOWN_BYTES]
            more = "..." if len(self.content) > SHOWN_BYTES else ""
            raise NotAnEventStream(
                f"{self.label} answered {self.status_code} {content_type}, not a 200 "
                f"text/event-stream: {body!r}{more}"
            )

    def _so_far(self) -> str:
        if not self.received:
            got = "no event received yet"
        else:
            got = f"{len(self.received)} event(s) received, the last {self.received[-1]!r}"
        raw = sum(len(chunk) for chunk in self.chunks)
        return f"{got} ({raw} bytes in {len(self.chunks)} chunk(s))"
