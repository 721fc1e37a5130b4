"""The backend interface and the message every backend carries."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

__all__ = [
    "HISTORY_LOST",
    "MAX_ID_PART",
    "WORKER",
    "Backend",
    "BackendUnavailable",
    "History",
    "LeaseState",
    "Message",
    "NotServingStreams",
    "id_key",
    "in_id_order",
]

#: This process's token in leases and presence: readable in ``redis-cli``, unique across
#: restarts (a new pid or a new random part).
WORKER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class BackendUnavailable(RuntimeError):
    """The backend cannot publish now (e.g. Redis is unreachable); nothing was published."""


class NotServingStreams(BackendUnavailable):
    """A process-local backend was asked to publish where no stream is served (a management
    command, a shell, a cron job, a task worker): nobody could receive it; nothing was published.
    """


#: The type of the control message a backend delivers once (to no channel) when history its
#: process listened to may have been lost (a change of Redis server): its data is the body of
#: the ``reset`` event the channel layer then sends once to each session.
HISTORY_LOST = "stream_app.history_lost"


@dataclass(slots=True)
class Message:
    """One published event: serialized data text, type, filter, and the id the backend gave it.

    ``is_json`` says ``data`` is the JSON of a value that was not text (a backend that hands
    events to other code, like the Channels backend's consumers, decodes it for them).
    """

    channel: str
    data: str
    event: str | None = None
    filter: Any = None
    id: str = ""
    is_json: bool = False

    def dumps(self) -> str:
        """The message as JSON for the wire between processes (without channel and id)."""
        if callable(self.filter):
            raise TypeError("a callable filter cannot cross a process")
        body: dict[str, Any] = {"d": self.data}
        if self.event is not None:
            body["e"] = self.event
        if self.filter is not None:
            body["f"] = self.filter
        return json.dumps(body, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def loads(cls, channel: str, id: str, text: str | bytes) -> Message:
        """Rebuild a message from ``dumps`` output."""
        body = json.loads(text)
        return cls(channel, body["d"], body.get("e"), body.get("f"), id)


@dataclass(slots=True)
class History:
    """Events after a client's last id: ``messages`` in id order; ``complete`` False when some
    were no longer retained (the client gets a ``reset`` event)."""

    messages: list[Message]
    complete: bool


#: Largest part of an id: Redis Stream ids are two unsigned 64-bit integers, and Redis refuses
#: anything larger (memory ids stay far below).
MAX_ID_PART = 2**64 - 1


def id_key(event_id: str) -> tuple[int, ...] | None:
    """Order key of a backend id (``<a>-<b>``, ASCII digits each at most ``MAX_ID_PART``),
    None if it is not one.

    ``Last-Event-ID`` is client input: ``str.isdigit`` alone would accept ``"²"`` (which
    ``int`` refuses) and Arabic-Indic digits, and parts past 64 bits make Redis fail.
    """
    head, sep, tail = event_id.partition("-")
    if (
        not sep
        or len(event_id) > 64
        or not (head.isascii() and head.isdigit() and tail.isascii() and tail.isdigit())
    ):
        return None
    key = (int(head), int(tail))
    if key[0] > MAX_ID_PART or key[1] > MAX_ID_PART:
        return None
    return key


def in_id_order(messages: list[Message]) -> list[Message]:
    """``messages`` of several channels sorted into one history by id (ids grow across them)."""
    messages.sort(key=lambda m: id_key(m.id) or (0, 0))
    return messages


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A lease's record (None if none is stored) and whether some process holds it now."""

    record: dict[str, Any] | None
    alive: bool


class Backend:
    """Moves messages between processes and keeps every fact they share. Subclasses implement
    the I/O.

    ``deliver`` (set by the hub) is called in the event loop that holds the sessions, with each
    message exactly once per process, in id order.

    **Leases** say which process runs a job (a generation) and how another process could run it
    again: a JSON record kept as long as history (``HISTORY_TTL``), and a heartbeat holding the
    runner's token (``worker``) with a TTL that the runner renews; once it has expired the
    runner is gone, and ``lease_claim`` lets exactly one process take the job over. The
    defaults here keep no lease (a backend that cannot share one: nothing moves between
    processes).

    **Presence** says whether any process has a session on a channel: each process marks the
    channels it has sessions on (``add_presence`` / ``remove_presence``), and a mark of a
    process that died without removing it disappears after at most ``presence_ttl`` seconds.
    The default counts this process's sessions only.
    """

    #: True where a callable filter can be evaluated (every session lives in this process).
    local_only = False
    #: Most seconds a dead process still counts in ``has_presence`` (0: never past its death).
    presence_ttl = 0.0
    #: False for a backend that keeps no history at all: a client resuming with
    #: ``Last-Event-ID`` gets a ``reset`` (``history_unavailable``) without a history read.
    keeps_history = True

    def __init__(self) -> None:
        self.deliver: Callable[[Message], None] = lambda message: None
        self.count_local: Callable[[str, Any], int] = lambda channel, filter: 0
        #: This process's token in leases and presence (``WORKER``; tests give their own).
        self.worker = WORKER

    async def publish(self, message: Message) -> str:
        """Publish, returning the id every recipient sees."""
        raise NotImplementedError

    def publish_sync(self, message: Message) -> str:
        """Publish from synchronous code (any thread); returns the id."""
        raise NotImplementedError

    def subscribe(self, channel: str) -> None:
        """This process has sessions on ``channel`` now: start receiving it (non-blocking)."""

    def unsubscribe(self, channel: str) -> None:
        """This process has no session on ``channel`` any more."""

    async def ready(self, channel: str, timeout: float) -> bool:
        """Wait until live events of ``channel`` reach this process; False on timeout."""
        return True

    async def history(
        self, channels: Iterable[str], after: str | None, limit: int | None = None
    ) -> History:
        """Messages of ``channels`` published after id ``after``, merged in id order.

        ``after=None`` reads from the start of what is retained. ``limit`` returns at most that
        many, the oldest first: the next page starts after the last id returned. ``complete``
        is False when events after ``after`` are no longer retained (a ``reset`` for the
        client); each page answers it for its own ``after``.
        """
        return History([], False)

    async def count(self, channel: str, filter: Any) -> int:
        """Sessions on ``channel`` matching ``filter`` across all processes."""
        return self.count_local(channel, filter)

    def valid_id(self, event_id: str) -> bool:
        """Whether ``event_id`` has this backend's id form."""
        return id_key(event_id) is not None

    # -- presence -----------------------------------------------------------------------------

    def add_presence(self, channel: str) -> None:
        """This process has sessions on ``channel`` now (non-blocking)."""

    def remove_presence(self, channel: str) -> None:
        """This process has no session on ``channel`` any more (non-blocking)."""

    async def has_presence(self, channel: str) -> bool:
        """Whether some process has a session on ``channel`` (a dead one for at most
        ``presence_ttl`` seconds after it died)."""
        return self.count_local(channel, None) > 0

    # -- leases ---------------------------------------------------------------------------------

    async def lease_start(self, name: str, record: dict[str, Any], ttl: float) -> bool:
        """Store ``record`` for ``HISTORY_TTL`` and hold the lease ``name`` for ``ttl`` seconds;
        False if this backend keeps no leases."""
        return False

    async def lease_update(self, name: str, record: dict[str, Any]) -> None:
        """Replace the record of ``name`` (a new process runs it), keeping its TTL."""

    async def lease_state(self, name: str) -> LeaseState | None:
        """The record of ``name`` and whether its lease is held; None if no leases are kept."""
        return None

    async def lease_alive(self, name: str) -> bool:
        """Whether some process holds the lease ``name`` (True if no leases are kept)."""
        return True

    async def lease_claim(self, name: str, ttl: float) -> bool:
        """Hold the lease ``name`` if nobody does: True for exactly one of all the processes
        that try at once."""
        return False

    async def lease_renew(self, name: str, ttl: float) -> bool:
        """Extend the lease to ``ttl`` seconds from now if this process still holds it; False
        if it was lost (expired, or claimed by another process meanwhile)."""
        return True

    async def lease_reclaim(self, name: str, ttl: float) -> bool:
        """Hold the lease again if it is this process's or nobody's (after an outage)."""
        return True

    async def lease_release(self, name: str) -> None:
        """Let the lease go if this process holds it: another may claim it at once."""

    async def lease_drop(self, name: str) -> None:
        """The job is done: release the lease and delete the record."""

    async def ping(self) -> bool:
        """Whether the backend can publish now (for health checks)."""
        return True

    async def aclose(self) -> None:
        """Stop listening and close connections."""
        await asyncio.sleep(0)
