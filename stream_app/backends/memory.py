"""The embedded backend: one process, history in a bounded ring buffer per channel.

Ids are ``<boot>-<seq>``: ``boot`` is the process start time in milliseconds and ``seq`` counts
every publish, so ids grow across channels and a client that kept an id from before a restart
is told (a ``reset`` event) that history was lost.

Publishing from another thread (a sync view under ASGI runs in a worker thread) hands the
delivery to the event loop that holds the sessions. Publishing from another *process* (a
management command, a shell, cron, Celery) cannot reach these sessions: use the Redis backend
for that. So that such an event is never lost silently, a publish raises ``NotServingStreams``
unless this process serves streams, which it does once any of these happened in it:

- ``stream_app.asgi.StreamASGIHandler`` was created (``get_asgi_application()``);
- Django's own ASGI handler began a request (``request_started`` with a ``scope``; WSGI
  requests send an ``environ``, and serve no streams);
- a session subscribed to a channel.

Retention follows Redis' TTL: a channel's history is dropped ``HISTORY_TTL`` seconds after its
last event, unless a session of this process still listens to it (then it is kept, and its
clock starts again). Channels are kept in the order of their last event, so each publish
looks only at the oldest few (``PRUNE_BATCH``): bounded work, never a scan of them all.

Leases and presence are kept in this process, with the same contract as on Redis: a lease's
heartbeat expires ``ttl`` seconds after it was last renewed, its record ``HISTORY_TTL`` seconds
after it was stored, and presence is this process's own sessions.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable
from itertools import islice
from typing import Any

from django.core.signals import request_started

from ..conf import app_settings
from .base import Backend, History, LeaseState, Message, NotServingStreams, id_key, in_id_order

__all__ = [
    "NOT_SERVING",
    "PRUNE_BATCH",
    "MemoryBackend",
    "connect_receivers",
    "is_serving",
    "mark_serving",
]

NOT_SERVING = (
    "This process serves no streams, and the memory backend delivers only to the streams of "
    "the process that publishes: nobody would receive this event. To publish from a "
    "management command, a shell, a cron job or a task worker, set "
    'STREAM_APP["BACKEND"] = "stream_app.backends.redis.RedisBackend" (with REDIS_URL) or '
    '"stream_app.backends.channels.ChannelsBackend", the same in every process.'
)
# Process-wide, not per backend instance: the handler is built once, backends can be rebuilt.
_serving = {"on": False}


def mark_serving(serving: bool = True) -> None:
    """Record that this process serves streams (see the module docstring); tests may unset it."""
    _serving["on"] = serving


def is_serving() -> bool:
    """Whether this process serves streams, so that a memory publish can reach someone."""
    return _serving["on"]


def _on_request_started(sender: object, scope: object = None, **kwargs: object) -> None:
    # ASGI handlers send the scope, WSGI ones the environ. Sync and trivial on purpose: it runs
    # with Django's own receivers, in the hop they already take.
    if scope is not None and not _serving["on"]:
        _serving["on"] = True


def connect_receivers() -> None:
    """Mark this process serving on its first ASGI request (called by ``AppConfig.ready``)."""
    request_started.connect(_on_request_started, dispatch_uid="stream_app.backends.memory")


#: Most channels a publish looks at for expiry (the oldest ones).
PRUNE_BATCH = 32


class _Ring:
    __slots__ = ("dropped", "entries", "touched")

    def __init__(self, size: int, now: float) -> None:
        self.entries: deque[Message] = deque(maxlen=size)
        # Order key of the newest message pushed out of the ring: replay from before it is
        # incomplete.
        self.dropped: tuple[int, ...] | None = None
        # Monotonic time of the last event (or of the last look while it had listeners).
        self.touched = now


class MemoryBackend(Backend):
    """One process; the embedded default."""

    local_only = True

    def __init__(self) -> None:
        super().__init__()
        self.boot = time.time_ns() // 1_000_000
        self._seq = 0
        self._lock = threading.Lock()
        # Least recently published first (see _prune).
        self._rings: OrderedDict[str, _Ring] = OrderedDict()
        # Channels this process's sessions listen to: never dropped.
        self._listened: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        # Leases: name -> (record, expiry) and name -> (holder, expiry), monotonic times.
        self._records: dict[str, tuple[dict[str, Any], float]] = {}
        self._beats: dict[str, tuple[str, float]] = {}

    def _record(self, message: Message) -> None:
        if not message.data.isascii():
            # Nothing that cannot go on the wire is recorded: a lone surrogate (JSON allows
            # "\ud800") would fail every later replay of the channel. Redis' client refuses it
            # the same way (UnicodeEncodeError) before sending.
            message.data.encode()
        now = time.monotonic()
        with self._lock:
            self._seq += 1
            message.id = f"{self.boot}-{self._seq}"
            ring = self._rings.get(message.channel)
            if ring is None:
                ring = self._rings[message.channel] = _Ring(app_settings.HISTORY_SIZE, now)
            else:
                ring.touched = now
                self._rings.move_to_end(message.channel)
            if len(ring.entries) == ring.entries.maxlen:
                ring.dropped = id_key(ring.entries[0].id)
            ring.entries.append(message)
            self._prune(now)

    def _prune(self, now: float) -> None:
        """Drop expired channels among the oldest ``PRUNE_BATCH`` (the lock is held)."""
        ttl = app_settings.HISTORY_TTL
        for _ in range(PRUNE_BATCH):
            if not self._rings:
                # HISTORY_TTL = 0: even the channel just published to is gone.
                return
            name, ring = next(iter(self._rings.items()))
            if now - ring.touched < ttl:
                return
            if name in self._listened:
                # Kept while listened to; its clock restarts, so the order stays by age.
                ring.touched = now
                self._rings.move_to_end(name)
            else:
                del self._rings[name]

    def _expired(self, name: str, ring: _Ring, now: float) -> bool:
        """Whether ``ring`` outlived its TTL unheard (then it is dropped; the lock is held)."""
        if name in self._listened or now - ring.touched < app_settings.HISTORY_TTL:
            return False
        del self._rings[name]
        return True

    async def publish(self, message: Message) -> str:
        """Record and deliver at once in this loop."""
        return self.publish_sync(message)

    def publish_sync(self, message: Message) -> str:
        """Record, and deliver in the sessions' loop (at once if this is its thread).

        Raises ``NotServingStreams`` in a process that serves no streams.
        """
        if not _serving["on"]:
            raise NotServingStreams(NOT_SERVING)
        self._record(message)
        loop = self._loop
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if loop is None or loop is running:
            self.deliver(message)
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self.deliver, message)
        return message.id

    def subscribe(self, channel: str) -> None:
        """Remember the loop that holds the sessions, for deliveries from other threads."""
        self._loop = asyncio.get_running_loop()
        self._listened.add(channel)
        _serving["on"] = True

    def unsubscribe(self, channel: str) -> None:
        """No session listens to ``channel`` any more: its history may expire."""
        self._listened.discard(channel)

    async def history(
        self, channels: Iterable[str], after: str | None, limit: int | None = None
    ) -> History:
        """Retained messages after ``after`` (all with None), at most ``limit``; incomplete
        across a restart or past the ring."""
        found = (0, 0) if after is None else id_key(after)
        if found is None:
            return History([], False)
        key = found
        complete = after is None or key[0] == self.boot
        messages: list[Message] = []
        now = time.monotonic()
        with self._lock:
            for channel in channels:
                ring = self._rings.get(channel)
                if ring is None or self._expired(channel, ring, now):
                    continue
                if ring.dropped is not None and ring.dropped > key:
                    complete = False
                newer = (m for m in ring.entries if (id_key(m.id) or (0, 0)) > key)
                # Each channel's first ``limit`` are enough for the first ``limit`` of all.
                messages.extend(islice(newer, limit))
        messages = in_id_order(messages)
        return History(messages if limit is None else messages[:limit], complete)

    # -- leases (in this process) ---------------------------------------------------------------

    def _holder(self, name: str) -> str | None:
        beat = self._beats.get(name)
        if beat is not None and beat[1] <= time.monotonic():
            del self._beats[name]
            return None
        return beat[0] if beat is not None else None

    def _hold(self, name: str, ttl: float) -> None:
        self._beats[name] = (self.worker, time.monotonic() + ttl)

    async def lease_start(self, name: str, record: dict[str, Any], ttl: float) -> bool:
        """Store the record and hold the lease (see the module docstring)."""
        now = time.monotonic()
        # Expired ones go here, so that leases never dropped cannot pile up.
        for gone in [key for key, (_, until) in self._records.items() if until <= now]:
            del self._records[gone]
        self._records[name] = (dict(record), now + app_settings.HISTORY_TTL)
        self._hold(name, ttl)
        return True

    async def lease_update(self, name: str, record: dict[str, Any]) -> None:
        """Replace the record, keeping its expiry."""
        found = self._records.get(name)
        if found is not None:
            self._records[name] = (dict(record), found[1])

    async def lease_state(self, name: str) -> LeaseState:
        """The record (None once expired) and whether the lease is held."""
        found = self._records.get(name)
        if found is not None and found[1] <= time.monotonic():
            del self._records[name]
            found = None
        return LeaseState(dict(found[0]) if found else None, self._holder(name) is not None)

    async def lease_alive(self, name: str) -> bool:
        """Whether the lease is held."""
        return self._holder(name) is not None

    async def lease_claim(self, name: str, ttl: float) -> bool:
        """Hold the lease if nobody does."""
        if self._holder(name) is not None:
            return False
        self._hold(name, ttl)
        return True

    async def lease_renew(self, name: str, ttl: float) -> bool:
        """Extend the lease if this process holds it."""
        if self._holder(name) != self.worker:
            return False
        self._hold(name, ttl)
        return True

    async def lease_reclaim(self, name: str, ttl: float) -> bool:
        """Hold the lease again unless someone else does."""
        if self._holder(name) not in (None, self.worker):
            return False
        self._hold(name, ttl)
        return True

    async def lease_release(self, name: str) -> None:
        """Let the lease go if held here."""
        if self._holder(name) == self.worker:
            del self._beats[name]

    async def lease_drop(self, name: str) -> None:
        """Release the lease and forget the record."""
        await self.lease_release(name)
        self._records.pop(name, None)
