"""Test isolation for what is published: a fresh in-memory backend, and a broadcast recorder.

``memory_backend()`` gives a block (a test) its own ``MemoryBackend``: history and ids start
empty and nothing published in it is replayed to the next. ``record_broadcasts()`` records
every event published from this process while it is open (any backend), from the
``broadcast_sent`` signal: channel, event type, data, filter and id.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, overload

from django.test import override_settings

from ..backends import get_backend, reset_backend
from ..backends.memory import MemoryBackend, is_serving, mark_serving
from ..conf import app_settings
from ..signals import broadcast_sent
from .reader import StreamTimeout

__all__ = [
    "MEMORY_BACKEND",
    "Broadcast",
    "BroadcastRecorder",
    "memory_backend",
    "record_broadcasts",
]

MEMORY_BACKEND = "stream_app.backends.memory.MemoryBackend"


@contextmanager
def memory_backend() -> Iterator[MemoryBackend]:
    """Use a new in-memory backend inside the block, whatever ``STREAM_APP["BACKEND"]`` says.

    This process counts as serving streams meanwhile (it does: the tests read them in
    process), so that a memory publish from the test is delivered rather than refused.
    """
    serving = is_serving()
    with override_settings(STREAM_APP={**app_settings.user_settings, "BACKEND": MEMORY_BACKEND}):
        reset_backend()
        mark_serving()
        try:
            backend = get_backend()
            assert isinstance(backend, MemoryBackend)
            yield backend
        finally:
            reset_backend()
            mark_serving(serving)


@dataclass(frozen=True)
class Broadcast:
    """One published event: ``data`` is the payload as sent (JSON text for non-text data)."""

    channel: str
    data: str
    event: str | None
    filter: Any
    id: str

    def json(self) -> Any:
        """``data`` parsed as JSON."""
        return json.loads(self.data)


class BroadcastRecorder:
    """The events published while recording, in order: index it, ``len()`` it, filter it."""

    def __init__(self) -> None:
        self._items: list[Broadcast] = []
        self._lock = threading.Lock()

    def record(self, broadcast: Broadcast) -> None:
        """Add one (from any thread: sync views publish from Django's worker threads)."""
        with self._lock:
            self._items.append(broadcast)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[Broadcast]:
        return iter(list(self._items))

    @overload
    def __getitem__(self, index: int) -> Broadcast: ...
    @overload
    def __getitem__(self, index: slice) -> list[Broadcast]: ...
    def __getitem__(self, index: int | slice) -> Broadcast | list[Broadcast]:
        return self._items[index]

    def __repr__(self) -> str:
        return f"<BroadcastRecorder {self._items!r}>"

    def on(self, channel: str, event: str | None = None) -> list[Broadcast]:
        """Those published on ``channel`` (and of type ``event`` if given)."""
        return [b for b in self if b.channel == channel and (event is None or b.event == event)]

    def clear(self) -> None:
        """Forget what was recorded so far."""
        with self._lock:
            self._items.clear()

    async def wait(
        self, count: int = 1, *, channel: str | None = None, timeout: float = 5.0
    ) -> list[Broadcast]:
        """Wait until ``count`` events were published (on ``channel`` if given), for work
        that publishes in the background (an LLM generation, a task); returns them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            found = [b for b in self if channel is None or b.channel == channel]
            if len(found) >= count:
                return found
            if loop.time() >= deadline:
                where = f" on {channel!r}" if channel is not None else ""
                raise StreamTimeout(
                    f"{count} broadcast(s){where} did not come within {timeout:g}s; "
                    f"recorded: {self._items!r}"
                )
            # Publishes come from this loop or from threads: a short poll sees both.
            await asyncio.sleep(0.005)


@contextmanager
def record_broadcasts() -> Iterator[BroadcastRecorder]:
    """Record every event this process publishes inside the block."""
    recorder = BroadcastRecorder()

    def receiver(sender: object, channel: Any, id: str, event: str | None, **kw: Any) -> None:
        recorder.record(Broadcast(channel.name, kw["data"], event, kw["filter"], id))

    broadcast_sent.connect(receiver, weak=False)
    try:
        yield recorder
    finally:
        broadcast_sent.disconnect(receiver)
