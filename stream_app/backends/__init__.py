"""Backends move published events between processes and keep the history for replay.

One backend instance per process, built from ``STREAM_APP["BACKEND"]`` on first use:

- ``memory.MemoryBackend``: one process, the embedded default.
- ``redis.RedisBackend``: Redis Streams for history and ids, pub/sub to wake one listener per
  process; production with several workers.
- ``channels.ChannelsBackend``: an adapter over the project's Django Channels layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.utils.module_loading import import_string

from ..conf import app_settings

if TYPE_CHECKING:
    from .base import Backend

__all__ = ["close_backends", "get_backend", "reset_backend"]

_backend: Backend | None = None
_backend_path: str | None = None


def get_backend() -> Backend:
    """The process's backend, built from the ``BACKEND`` setting on first use."""
    global _backend, _backend_path
    path = app_settings.BACKEND
    if _backend is None or _backend_path != path:
        from ..channels import _deliver, count_local

        backend = import_string(path)()
        backend.deliver = _deliver
        backend.count_local = count_local
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
