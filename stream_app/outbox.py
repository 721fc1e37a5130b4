"""The outbox of a session: its bounded queue of encoded frames and every way to fill it.

``Session`` (``stream_app.sessions``) builds on it with the writer that drains the queue and the
stream's lifecycle; an outbox alone never ends itself (``_abort`` is the session's).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any, Literal

from . import protocol
from .conf import app_settings
from .encoding import EventBuffer, compact_json
from .stats import stats

__all__ = ["Outbox", "Overflow", "QueueFull"]

logger = logging.getLogger("stream_app")

#: What a full queue does to a ``push``: end the stream, or raise ``QueueFull``.
Overflow = Literal["close", "raise"]


class QueueFull(Exception):
    """A push found the session's bounded queue full (``overflow="raise"``)."""


class Outbox:
    """A bounded queue of encoded frames, and the producers that fill it (see ``Session``)."""

    __slots__ = (
        "_closed",
        "_closing",
        "_queue",
        "_room",
        "_waiter",
        "max_queue",
        "overflow",
        "sanitizer",
        "serializer",
    )

    def __init__(
        self,
        serializer: Any = json,
        sanitizer: Callable[[str], str] | None = None,
        max_queue: int | None = None,
        overflow: Overflow = "close",
    ) -> None:
        if overflow not in ("close", "raise"):
            raise ValueError(f"overflow must be 'close' or 'raise', not {overflow!r}")
        self.serializer = serializer
        self.sanitizer = sanitizer
        self.max_queue = app_settings.MAX_QUEUE if max_queue is None else max_queue
        self.overflow = overflow
        self._queue: deque[bytes] = deque()
        # The writer's wake-up, and producers' wait for room.
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._closing = False
        self._closed = False

    @property
    def queued(self) -> int:
        """Frames waiting to be written."""
        return len(self._queue)

    def _abort(self, reason: str) -> None:  # pragma: no cover - the session's
        """End the stream now (``Session`` implements it)."""
        raise NotImplementedError

    def serialize(self, data: Any) -> str:
        """The ``data:`` text for ``data``: ``str`` as is, anything else through the serializer."""
        if isinstance(data, str):
            text = data
        elif isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("push() takes text or serializable data, not bytes: decode it first")
        elif self.serializer is json:
            text = compact_json(data)
        else:
            text = self.serializer.dumps(data)
        if self.sanitizer is not None:
            text = self.sanitizer(text)
        return text

    def encode(self, data: Any, event: str | None = None, id: str | None = None) -> bytes:
        """The wire bytes of one event, as ``push`` would queue them."""
        return protocol.encode_data(self.serialize(data), event, id)

    def push(self, data: Any, event: str | None = None, id: str | None = None) -> bool:
        """Queue one event without waiting; False if the session has ended.

        A full queue follows the session's ``overflow`` policy: ``"close"`` ends the stream as a
        slow consumer (the client reconnects and replays from ``Last-Event-ID``) and returns
        False; ``"raise"`` raises ``QueueFull`` and keeps the stream.
        """
        if self._closed or self._closing:
            return False
        return self.put(self.encode(data, event, id))

    async def send(self, data: Any, event: str | None = None, id: str | None = None) -> bool:
        """Queue one event, first waiting for room in the queue (backpressure)."""
        frame = self.encode(data, event, id)
        if not await self._wait_for_room():
            return False
        return self.put(frame)

    async def iterate(
        self, source: Iterable[Any] | AsyncIterable[Any], event: str | None = None
    ) -> bool:
        """Push every item of a sync or async iterable, waiting for room as needed.

        Returns False if the session ended before the source was exhausted.
        """
        queue = self._queue
        if isinstance(source, AsyncIterable):
            async for item in source:
                if not await self.send(item, event):
                    return False
            return True
        for item in source:
            frame = self.encode(item, event)
            # While there is room, queue without a coroutine per item; the writer takes the
            # whole batch at its next turn.
            if (len(queue) >= self.max_queue or self._closing) and not await self._wait_for_room():
                return False
            if not self.put(frame):
                return False
        return True

    async def stream(
        self,
        source: AsyncIterable[str | bytes],
        event: str | None = None,
        transform: Callable[[str], Any] | None = None,
    ) -> bool:
        """Push each chunk of a byte or text stream as one event (bytes decoded as UTF-8).

        ``transform`` maps each decoded chunk to the data to push (a ``str`` is sent as is).
        """
        async for chunk in source:
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            if not await self.send(transform(text) if transform else text, event):
                return False
        return True

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[EventBuffer]:
        """Collect events in a buffer and queue them as one write when the block exits."""
        buffer = EventBuffer(self)
        yield buffer
        await self.flush(buffer)

    async def flush(self, buffer: EventBuffer) -> bool:
        """Queue the events of ``buffer`` as one frame (what ``batch()`` does on exit)."""
        if not buffer:
            return not self._closed
        frame = buffer.getvalue()
        buffer.clear()
        if not await self._wait_for_room():
            return False
        return self.put(frame)

    async def batch_call(self, callback: Callable[[EventBuffer], Awaitable[object]]) -> bool:
        """The callback form of ``batch()``: ``await session.batch_call(fill)``."""
        buffer = EventBuffer(self)
        await callback(buffer)
        return await self.flush(buffer)

    async def wait_for_room(self) -> bool:
        """Wait until the queue has room; False if the session ended or is closing meanwhile."""
        return await self._wait_for_room()

    def put(self, frame: bytes, keep_alive: bool = False) -> bool:
        """Queue one encoded frame (``protocol.encode_data`` output) without waiting.

        The one place every producer goes through (fan-out and replay call it directly). The
        same overflow policy as ``push``; False if the session has ended. A ``keep_alive``
        frame (a comment, a ``retry``) is queued even when the queue is full.
        """
        if self._closed:
            return False
        queue = self._queue
        if len(queue) >= self.max_queue and not keep_alive:
            if self.overflow == "raise":
                raise QueueFull(f"session queue is full ({self.max_queue} events)")
            stats.slow_consumers += 1
            logger.warning("closing a slow consumer: %d events queued", len(queue))
            self._abort("slow_consumer")
            return False
        queue.append(frame)
        stats.events_queued += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    async def _wait_for_room(self) -> bool:
        while len(self._queue) >= self.max_queue and not self._closed:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room
        return not self._closed and not self._closing
