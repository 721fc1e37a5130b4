"""Token coalescing: merge consecutive text deltas into one event per N ms or N characters.

A model streams one event per token (often one per 2-4 characters); each costs an SSE frame, a
JSON encode, a backend publish and a browser repaint. Coalescing sends at most one text event
per ``interval_ms`` (a throttle with leading and trailing edge), or one as soon as ``max_chars``
are buffered. A delta after a quiet interval goes out at once, so the first token is as fast as
ever, and buffered text never waits longer than ``interval_ms``, even if upstream stalls. With
only ``max_chars`` set, text waits until that many characters, another event type, or the end.

Only ``Token`` events merge; any other event flushes the buffer first, so order is kept.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from .events import Token

__all__ = ["aclose_iterator", "coalesce"]

E = TypeVar("E")


# How many events the reader may hold ahead of a slow consumer (backpressure beyond that).
READ_AHEAD = 256


class _Pump:
    """Reads the source in one task of its own, so waiting has a deadline without a task per
    event: everything that arrived is taken at once, and only an empty buffer waits."""

    def __init__(self, source: AsyncIterator[Any]) -> None:
        self.source = source
        self.items: deque[Any] = deque()
        self.ended = False
        self.error: BaseException | None = None
        self._loop = asyncio.get_running_loop()
        self._arrived: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        try:
            async for item in self.source:
                self.items.append(item)
                self._wake()
                if len(self.items) >= READ_AHEAD:
                    self._room = self._loop.create_future()
                    await self._room
        except Exception as exc:
            self.error = exc
        finally:
            self.ended = True
            self._wake()

    def _wake(self) -> None:
        waiter = self._arrived
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take(self) -> list[Any]:
        """Everything read so far."""
        items = list(self.items)
        self.items.clear()
        room = self._room
        if room is not None and not room.done():
            room.set_result(None)
        return items

    async def wait(self, timeout: float | None) -> None:
        """Until something arrives, the source ends, or ``timeout`` seconds pass."""
        if self.items or self.ended:
            return
        waiter = self._arrived = self._loop.create_future()
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(timeout, _resolve, waiter)
        try:
            await waiter
        finally:
            if timer is not None:
                timer.cancel()

    async def close(self) -> None:
        """Stop reading and close the source (the upstream request)."""
        if not self.task.done():
            self.task.cancel()
            await asyncio.wait((self.task,))
        await aclose_iterator(self.source)


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


async def coalesce(
    source: AsyncIterator[E], *, interval_ms: float = 0, max_chars: int = 0
) -> AsyncIterator[E | Token]:
    """Yield ``source``'s events with runs of ``Token`` merged (both limits 0: unchanged).

    ``interval_ms`` bounds how long a delta waits; ``max_chars`` how much text one event
    carries. Closing this iterator closes ``source`` (and so the upstream request).
    """
    if interval_ms <= 0 and max_chars <= 0:
        try:
            async for event in source:
                yield event
        finally:
            await aclose_iterator(source)
        return
    loop = asyncio.get_running_loop()
    interval = interval_ms / 1000 if interval_ms > 0 else None
    parts: list[str] = []
    size = 0
    # When the last merged event went out: a delta arriving after a quiet interval goes out
    # at once (leading edge), so coalescing never delays the first token.
    last_sent = -float("inf")
    pump = _Pump(source)
    try:
        while True:
            timeout = None
            if parts and interval is not None:
                timeout = max(0.0, last_sent + interval - loop.time())
            await pump.wait(timeout)
            for event in pump.take():
                if isinstance(event, Token):
                    parts.append(event.text)
                    size += len(event.text)
                    if max_chars > 0 and size >= max_chars:
                        yield Token("".join(parts))
                        parts.clear()
                        size = 0
                        last_sent = loop.time()
                    continue
                if parts:
                    yield Token("".join(parts))
                    parts.clear()
                    size = 0
                    last_sent = loop.time()
                yield event
            now = loop.time()
            if parts and (pump.ended or (interval is not None and now - last_sent >= interval)):
                yield Token("".join(parts) if len(parts) > 1 else parts[0])
                parts.clear()
                size = 0
                last_sent = now
            if pump.ended and not pump.items:
                if pump.error is not None:
                    raise pump.error
                return
    finally:
        await pump.close()


async def aclose_iterator(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator that has ``aclose`` (an async generator); others are left."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
