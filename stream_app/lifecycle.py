"""Process lifecycle: the ASGI lifespan protocol and graceful shutdown of open streams.

On shutdown every open stream is told to come back later (a ``retry`` with jitter, so that
thousands of clients do not reconnect in the same millisecond) and is then closed; clients
reconnect to another worker and resume with ``Last-Event-ID``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable
from typing import Any

from .conf import app_settings

__all__ = ["serve_lifespan", "shutdown_sessions", "spawn"]

logger = logging.getLogger("stream_app")
_background: set[asyncio.Future[Any]] = set()


def spawn(awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run ``awaitable`` as a background task, keeping a reference until it is done.

    The event loop keeps only weak references to tasks: one nobody holds can vanish mid-run.
    """
    task = asyncio.ensure_future(awaitable)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


async def shutdown_sessions(grace: float | None = None) -> int:
    """Ask every open session to reconnect elsewhere and close it; returns how many.

    Each client gets ``retry: <base + jitter>`` then the stream ends once its queue is written;
    sessions still open after ``grace`` seconds are aborted.
    """
    from .sessions import live_sessions

    grace = app_settings.SHUTDOWN_GRACE if grace is None else grace
    sessions = list(live_sessions)
    base = app_settings.SHUTDOWN_RETRY
    for session in sessions:
        session._enqueue(f"retry: {base + random.randint(0, base)}\n\n".encode(), keep_alive=True)
        session.close_reason = "shutdown"
        session.close()
    if sessions:
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(s.wait_closed()) for s in sessions], timeout=grace
        )
        for session in sessions:
            if not session.is_closed:
                session._abort("shutdown")
        logger.info(
            "closed %d streams for shutdown (%d past the grace period)", len(sessions), len(pending)
        )
    from .backends import close_backends

    await close_backends()
    return len(sessions)


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Answer the ASGI lifespan protocol; shutdown closes streams gracefully."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_sessions()
            await send({"type": "lifespan.shutdown.complete"})
            return
