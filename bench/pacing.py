"""What the servers under test share: paced broadcasts and the fan-out frame format.

Dependency-free so that the raw ASGI yardstick imports nothing but the standard library. Every
fan-out payload carries ``"t"`` (``time.time()`` when the server published it) and ``"i"`` (the
broadcast's index); the load generator, another process, subtracts ``t`` from its own clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterable

__all__ = ["broadcast_frames", "fanout_frame", "paced", "token_frame"]


async def paced(count: int, rate: float) -> AsyncIterator[int]:
    """Yield ``0..count-1``, the i-th at ``i / rate`` seconds from the start (no drift)."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    for index in range(count):
        yield index
        delay = start + (index + 1) / rate - loop.time()
        if delay > 0 and index + 1 < count:
            await asyncio.sleep(delay)


def fanout_frame(index: int) -> bytes:
    """One hand-encoded broadcast frame, stamped now (what the yardsticks send)."""
    return b'data: {"t":%r,"i":%d}\n\n' % (time.time(), index)


def token_frame(index: int) -> bytes:
    """One tiny token event, the same bytes our ``session.iterate(range(n))`` writes."""
    return b"data: %d\n\n" % index


async def broadcast_frames(
    count: int, rate: float, queues: Iterable[asyncio.Queue[bytes | None]]
) -> None:
    """The yardsticks' broadcast: encode each frame once and put it into every queue."""
    async for index in paced(count, rate):
        frame = fanout_frame(index)
        for queue in list(queues):
            queue.put_nowait(frame)
