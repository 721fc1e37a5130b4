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
from collections.abc import AsyncIterator
from typing import Any, TypeVar

from .events import Token

__all__ = ["aclose_iterator", "coalesce"]

E = TypeVar("E")


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
    pending: asyncio.Future[E] | None = None
    try:
        while True:
            if not parts and pending is None:
                # Nothing waits to be sent: no timer needed, read directly (the hot path).
                try:
                    event = await anext(source)
                except StopAsyncIteration:
                    return
            else:
                if pending is None:
                    pending = asyncio.ensure_future(anext(source))
                timeout = None
                if parts and interval is not None:
                    timeout = max(0.0, last_sent + interval - loop.time())
                done, _ = await asyncio.wait((pending,), timeout=timeout)
                if not done:
                    # Upstream is slow: send what we hold, keep waiting for the same read.
                    yield Token("".join(parts))
                    parts.clear()
                    size = 0
                    last_sent = loop.time()
                    continue
                future, pending = pending, None
                try:
                    event = future.result()
                except StopAsyncIteration:
                    if parts:
                        yield Token("".join(parts))
                        parts.clear()
                    return
            if isinstance(event, Token):
                parts.append(event.text)
                size += len(event.text)
                now = loop.time()
                if (max_chars > 0 and size >= max_chars) or (
                    interval is not None and now - last_sent >= interval
                ):
                    yield Token("".join(parts) if len(parts) > 1 else parts[0])
                    parts.clear()
                    size = 0
                    last_sent = now
                continue
            if parts:
                yield Token("".join(parts))
                parts.clear()
                size = 0
                last_sent = loop.time()
            yield event
    finally:
        if pending is not None and not pending.done():
            # The read in flight runs inside the source: cancel it and let it unwind before
            # closing the source (closing a running generator raises RuntimeError).
            pending.cancel()
            await asyncio.wait((pending,))
        if pending is not None and pending.done() and not pending.cancelled():
            pending.exception()  # mark retrieved: the stream is being abandoned anyway
        await aclose_iterator(source)


async def aclose_iterator(iterator: AsyncIterator[Any]) -> None:
    """Close an async iterator that has ``aclose`` (an async generator); others are left."""
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        await aclose()
