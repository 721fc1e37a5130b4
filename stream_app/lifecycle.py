"""Process lifecycle: background tasks, graceful shutdown on SIGTERM, the ASGI lifespan.

On SIGTERM (or the first SIGINT) every open stream is told to come back later (a ``retry``
with jitter, so thousands of clients do not reconnect in the same millisecond) and is closed
once what is queued has been written; streams that start meanwhile get the same treatment at
once, so they move to another worker. Then the server's own signal handler runs (uvicorn stops
accepting and exits; daphne stops its reactor). Clients reconnect to another worker and resume
with ``Last-Event-ID``. A second signal skips the wait.

uvicorn does not end open streams by itself on SIGTERM and daphne cancels them without a word;
the handler is installed, chained to the server's, when the first request arrives.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import threading
from collections.abc import Awaitable, Callable
from types import FrameType
from typing import Any

from .conf import app_settings
from .sessions import live_sessions
from .tasks import begin_shutdown, is_shutting_down, retry_frame, spawn

__all__ = [
    "install_signal_handlers",
    "is_shutting_down",
    "on_shutdown",
    "on_stop",
    "retry_frame",
    "serve_lifespan",
    "shutdown_sessions",
    "spawn",
]

logger = logging.getLogger("stream_app")
_state = {"installed": False}
_shutdown_hooks: list[Callable[[], Awaitable[object]]] = []
_stop_hooks: list[Callable[[], Awaitable[object]]] = []


def on_shutdown(callback: Callable[[], Awaitable[object]]) -> None:
    """Run ``await callback()`` when a graceful shutdown begins, before streams are closed.

    Features register here (LLM generations hand themselves over first); this module imports
    none of them.
    """
    if callback not in _shutdown_hooks:
        _shutdown_hooks.append(callback)


def on_stop(callback: Callable[[], Awaitable[object]]) -> None:
    """Run ``await callback()`` at the ASGI lifespan shutdown, once streams are closed
    (the app closes its backend here)."""
    if callback not in _stop_hooks:
        _stop_hooks.append(callback)


async def shutdown_sessions(grace: float | None = None) -> int:
    """Ask every open session to reconnect elsewhere and close it; returns how many.

    Sessions still open after ``grace`` seconds (a peer that does not read) are aborted.
    """
    begin_shutdown()
    for hook in list(_shutdown_hooks):
        # Features first (running LLM generations are handed over to another worker, or
        # cancelled and saved) before their streams are closed.
        try:
            await hook()
        except Exception:
            logger.exception("a shutdown hook failed")
    grace = app_settings.SHUTDOWN_GRACE if grace is None else grace
    sessions = list(live_sessions)
    for session in sessions:
        session.end_for_shutdown()
    if sessions:
        _, pending = await asyncio.wait(
            [asyncio.ensure_future(s.wait_closed()) for s in sessions], timeout=grace
        )
        for session in sessions:
            session.abort("shutdown")
        logger.info("shutdown streams=%d past_grace=%d", len(sessions), len(pending))
    return len(sessions)


def tune_gc() -> None:
    """Freeze start-up objects and raise the young-generation threshold (``GC_THRESHOLD``).

    Every wake-up of a stream's writer allocates a future that lives until the next event;
    with the default threshold (700) thousands of them are promoted to the oldest generation
    and trigger full collections that pause every stream (p99 94-106 ms at 1,000 streams and
    10 broadcasts/s, measured with ``python -m bench --quick``). With 50,000 they die young:
    p99 16-20 ms, and 20-30% less CPU per event. Frozen start-up objects are never walked
    again. The cost is garbage that waits longer for a collection: under a flood of refused
    requests the worker settled about 30 MB higher than with the defaults (tests/test_faults);
    the older generations' thresholds (5, 5) keep that bounded.
    """
    threshold = app_settings.GC_THRESHOLD
    if threshold is None:
        return
    gc.collect()
    gc.freeze()
    gc.set_threshold(*threshold)


def install_signal_handlers() -> None:
    """Chain a graceful-shutdown handler in front of the server's SIGTERM and SIGINT handlers.

    Called from the running event loop in the main thread; does nothing elsewhere or twice.
    Also tunes the garbage collector once (``tune_gc``).
    """
    if _state["installed"] or threading.current_thread() is not threading.main_thread():
        return
    _state["installed"] = True
    tune_gc()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            # SIG_DFL / SIG_IGN: the server did not take the signal; keep Python's default.
            continue
        signal.signal(signum, _handler(loop, previous))


def _handler(
    loop: asyncio.AbstractEventLoop, previous: Callable[[int, FrameType | None], Any]
) -> Callable[[int, FrameType | None], None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        if not begin_shutdown():
            previous(signum, frame)
            return
        logger.info("shutdown signal=%d: closing streams", signum)

        async def drain_then_stop() -> None:
            try:
                await shutdown_sessions()
            finally:
                previous(signum, frame)

        loop.call_soon_threadsafe(lambda: spawn(drain_then_stop()))

    return handle


async def serve_lifespan(receive: Any, send: Any) -> None:
    """Answer the ASGI lifespan protocol; shutdown closes streams, then runs ``on_stop``
    hooks (the backend's close)."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            install_signal_handlers()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await shutdown_sessions()
            for hook in list(_stop_hooks):
                try:
                    await hook()
                except Exception:
                    logger.exception("a stop hook failed")
            await send({"type": "lifespan.shutdown.complete"})
            return
