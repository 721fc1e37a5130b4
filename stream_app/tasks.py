"""Background tasks and the process's shutdown flag: the leaf every layer may use.

``stream_app.lifecycle`` (the integration layer) sets the flag when a graceful shutdown
begins; sessions, backends and features only read it and spawn their tasks here.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable
from typing import Any

from .conf import app_settings

__all__ = ["begin_shutdown", "is_shutting_down", "retry_frame", "spawn"]

_background: set[asyncio.Future[Any]] = set()
_state = {"shutting_down": False}


def spawn(awaitable: Awaitable[Any]) -> asyncio.Future[Any]:
    """Run ``awaitable`` as a background task, keeping a reference until it is done.

    The event loop keeps only weak references to tasks: one nobody holds can vanish mid-run.
    """
    task = asyncio.ensure_future(awaitable)
    _background.add(task)
    task.add_done_callback(_background.discard)
    return task


def is_shutting_down() -> bool:
    """True once this process has begun a graceful shutdown."""
    return _state["shutting_down"]


def begin_shutdown() -> bool:
    """Record that a graceful shutdown has begun; False if it had already."""
    if _state["shutting_down"]:
        return False
    _state["shutting_down"] = True
    return True


def retry_frame() -> bytes:
    """A ``retry`` field between SHUTDOWN_RETRY and twice that, in milliseconds."""
    base = app_settings.SHUTDOWN_RETRY
    return f"retry: {base + random.randint(0, base)}\n\n".encode()
