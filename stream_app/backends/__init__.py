"""Backends move published events between processes and keep the history for replay.

One backend instance per process, built from ``STREAM_APP["BACKEND"]`` on first use:

- ``memory.MemoryBackend``: one process, the embedded default.
- ``redis.RedisBackend``: Redis Streams for history and ids, pub/sub to wake one listener per
  process; production with several workers.
- ``channels.ChannelsBackend``: an adapter over the project's Django Channels layer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils.module_loading import import_string

from ..conf import app_settings
from .base import Backend, Message

__all__ = ["attach", "close_backends", "get_backend", "reset_backend"]

_backend: Backend | None = None
_backend_path: str | None = None
# The channel layer's callbacks (``attach``), handed to every backend built.
_hub: dict[str, Any] = {}


def attach(deliver: Callable[[Message], None], count_local: Callable[[str, Any], int]) -> None:
    """Hand every backend the channel layer's callbacks: ``deliver(message)`` fans a message
    out to this process's sessions, ``count_local(channel, filter)`` counts them.

    ``stream_app.channels`` calls it when it is imported, so that backends never import it.
    """
    _hub["deliver"] = deliver
    _hub["count_local"] = count_local
    if _backend is not None:
        _backend.deliver = deliver
        _backend.count_local = count_local


def get_backend() -> Backend:
    """The process's backend, built from the ``BACKEND`` setting on first use."""
    global _backend, _backend_path
    path = app_settings.BACKEND
    if _backend is None or _backend_path != path:
        backend = import_string(path)()
        if _hub:
            backend.deliver = _hub["deliver"]
            backend.count_local = _hub["count_local"]
        _backend, _backend_path = backend, path
    return _backend


def reset_backend() -> None:
    """Forget the backend so the next use builds it anew (tests, settings changes)."""
    global _backend, _backend_path
    _backend = None
    _backend_path = None


async def close_backends() -> None:
    """Stop the backend's listener and close its connections."""
    if _backend is not None:
        await _backend.aclose()
