"""pytest fixtures for projects that use stream_app (loaded through the ``pytest11`` entry point).

- ``stream_backend``: a new in-memory backend for the test (history, ids and subscriptions do
  not leak from one test to the next), whatever ``STREAM_APP["BACKEND"]`` says.
- ``broadcasts``: a ``BroadcastRecorder`` of every event the test publishes (channel, event,
  data, filter, id).
- ``stream_client``: a ``StreamClient`` (Django's ``AsyncClient`` with ``read_stream``), on
  the ``stream_backend``.

Everything is imported when a fixture is first used, so the plugin costs nothing in test runs
that do not use it, and needs nothing beyond pytest and Django (pytest-django to configure the
settings, pytest-asyncio or another runner for ``async def`` tests).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from .backends.memory import MemoryBackend
    from .testing import BroadcastRecorder, StreamClient


@pytest.fixture
def stream_backend() -> Iterator[MemoryBackend]:
    """A new in-memory backend for this test (``stream_app.testing.memory_backend``)."""
    from .testing import memory_backend

    with memory_backend() as backend:
        yield backend


@pytest.fixture
def broadcasts() -> Iterator[BroadcastRecorder]:
    """What this test publishes (``stream_app.testing.record_broadcasts``)."""
    from .testing import record_broadcasts

    with record_broadcasts() as recorder:
        yield recorder


@pytest.fixture
def stream_client(stream_backend: MemoryBackend) -> StreamClient:
    """An ``AsyncClient`` whose ``read_stream(path, ...)`` reads SSE in process."""
    from .testing import StreamClient

    return StreamClient()
