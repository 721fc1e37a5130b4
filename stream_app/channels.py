"""Channels: named topics that broadcast events to every registered session on every worker.

``get_channel("news")`` returns the process's one ``Channel`` for that name; a broadcast goes
through the backend, which gives it an id and hands it to one listener per process; the listener
fans it out to this process's sessions on the channel, filtered by each session's ``state``.
The frame is encoded once per process and the same bytes are queued for every recipient.

``create_channel()`` makes an anonymous channel that lives in this process only: broadcasts skip
the backend, may use a callable filter, and have no history.

An observer (``observe``) hears what is delivered to a channel here without being a session.
Channels named by a ``track_presence`` prefix keep the backend's presence (``has_presence``).

Event types starting with ``stream_app.`` are reserved for stream_app's own control messages
between workers (``stream_app.logout``): ``broadcast`` refuses them, and delivery hands them to
the handler registered with ``on_control``, never to a session. This module handles one itself:
a backend's ``HISTORY_LOST`` becomes one ``reset`` per session, whatever its channels.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import async_to_sync

from . import protocol
from .backends import attach, get_backend
from .backends.base import HISTORY_LOST, BackendUnavailable, Message
from .filters import compile_filter
from .logs import log_publish_error
from .messages import (
    CHANNEL_NAME_RE,
    CONTROL_PREFIX,
    ChannelNameError,
    MessageTooLarge,
    build_message,
    validate_channel_name,
)
from .replay import SUBSCRIBE_TIMEOUT, Replay, compiled_filter, pending
from .sessions import stats
from .signals import broadcast_sent

if TYPE_CHECKING:
    from .sessions import Session

__all__ = [
    "CHANNEL_NAME_RE",
    "CONTROL_PREFIX",
    "Channel",
    "ChannelNameError",
    "MessageTooLarge",
    "abroadcast",
    "broadcast",
    "channel_snapshot",
    "count_local",
    "create_channel",
    "deliver",
    "get_channel",
    "leave_all",
    "on_control",
    "subscribe",
    "track_presence",
    "validate_channel_name",
]

logger = logging.getLogger("stream_app")

_registry: dict[str, Channel] = {}
_control_handlers: dict[str, Callable[[Message], None]] = {}
# Name prefixes of the channels whose presence the backend keeps (``track_presence``).
_presence_prefixes: list[str] = []


class Channel:
    """A topic sessions register on. Use ``get_channel(name)`` or ``create_channel()``.

    A named channel is one object per process: ``Channel(name)`` is ``get_channel(name)``, so
    that live delivery (which fans out to that object's sessions) reaches every session
    registered under the name, and one channel's last session leaving does not unsubscribe the
    process from a name others still use.
    """

    __slots__ = ("_observers", "_sessions", "local", "name")

    def __new__(cls, name: str, *, local: bool = False) -> Channel:
        if local:
            return super().__new__(cls)
        channel = _registry.get(name)
        if channel is None:
            channel = super().__new__(cls)
            channel._setup(validate_channel_name(name), local=False)
            _registry[name] = channel
        return channel

    def __init__(self, name: str, *, local: bool = False) -> None:
        # A named channel was set up once, in __new__; __init__ runs again on every call.
        if local:
            self._setup(name, local=True)

    def _setup(self, name: str, *, local: bool) -> None:
        self.name = name
        self.local = local
        self._sessions: set[Session] = set()
        self._observers: list[Callable[[Message], None]] = []

    def __repr__(self) -> str:
        kind = "local " if self.local else ""
        return f"<{kind}Channel {self.name!r} sessions={len(self._sessions)}>"

    @property
    def active_sessions(self) -> list[Session]:
        """The sessions registered in this process."""
        return list(self._sessions)

    @property
    def session_count(self) -> int:
        """How many sessions are registered in this process."""
        return len(self._sessions)

    def register(self, session: Session) -> None:
        """Add a session (idempotent); it leaves by itself when its stream ends.

        A session with a ``last_event_id`` first receives what it missed on this channel.
        Channels registered in a row (before the event loop runs the first one's replay)
        replay as one ordered history, as ``subscribe(session, channels)`` does.
        """
        replay = None
        if session.last_event_id and not self.local and not session.is_closed:
            joined = pending(session)
            if joined is not None:
                if self._add(session):
                    joined.channels.append(self.name)
                return
            replay = Replay(session, [self.name], session.last_event_id)
            # Live events wait in the replay's hold until history is queued.
            session.hold = replay.hold
        if self._add(session) and replay is not None:
            replay.start()
        elif replay is not None:
            session.hold = None

    def _add(self, session: Session) -> bool:
        if session.is_closed or session in self._sessions:
            return False
        if not self._sessions and not self.local:
            backend = get_backend()
            if not self._observers:
                backend.subscribe(self.name)
            if self.name.startswith(tuple(_presence_prefixes)):
                backend.add_presence(self.name)
        self._sessions.add(session)
        if session.channels is None:
            session.channels = set()
        session.channels.add(self)
        return True

    def deregister(self, session: Session) -> None:
        """Remove a session (idempotent)."""
        if session not in self._sessions:
            return
        self._sessions.discard(session)
        if session.channels is not None:
            session.channels.discard(self)
        if not self._sessions and not self.local:
            backend = get_backend()
            if self.name.startswith(tuple(_presence_prefixes)):
                backend.remove_presence(self.name)
            if not self._observers:
                backend.unsubscribe(self.name)

    def observe(self, callback: Callable[[Message], None]) -> Callable[[], None]:
        """Call ``callback(message)`` (in the sessions' loop; it must not block) with what the
        backend delivers to this channel here, keeping the process subscribed but counting as
        no session; returns the function that stops it."""
        if not self._sessions and not self._observers and not self.local:
            get_backend().subscribe(self.name)
        self._observers.append(callback)

        def stop() -> None:
            if callback in self._observers:
                self._observers.remove(callback)
                if not self._sessions and not self._observers and not self.local:
                    get_backend().unsubscribe(self.name)

        return stop

    def broadcast(
        self, data: Any, event: str | None = None, *, filter: Any = None, id: str | None = None
    ) -> str:
        """Send to every matching session on every worker; returns the event id.

        Works from sync code in any thread and from async code; in async code prefer
        ``await channel.abroadcast(...)``, which never blocks the loop on network I/O.
        ``id`` is used only on a process-local channel (backends assign ids).
        """
        message = self._build(data, event, filter, id)
        if self.local:
            return self._deliver_local(message)
        try:
            event_id = get_backend().publish_sync(message)
        except BackendUnavailable as exc:
            _publish_failed(message, exc)
            raise
        return _sent(event_id, self, message)

    async def abroadcast(
        self, data: Any, event: str | None = None, *, filter: Any = None, id: str | None = None
    ) -> str:
        """The async form of ``broadcast``."""
        message = self._build(data, event, filter, id)
        if self.local:
            return self._deliver_local(message)
        try:
            event_id = await get_backend().publish(message)
        except BackendUnavailable as exc:
            _publish_failed(message, exc)
            raise
        return _sent(event_id, self, message)

    def _build(self, data: Any, event: str | None, filter: Any, id: str | None) -> Message:
        local = self.local or (callable(filter) and get_backend().local_only)
        return build_message(self.name, data, event, filter, id, local=local)

    def _deliver_local(self, message: Message) -> str:
        if not message.id:
            message.id = uuid.uuid4().hex
        self.fan_out(message)
        return message.id

    def fan_out(self, message: Message) -> int:
        """Queue ``message`` on this process's matching sessions; returns how many."""
        sessions = self._sessions
        if not sessions:
            return 0
        predicate = compiled_filter(message.filter)
        frame: bytes | None = None
        delivered = 0
        for session in list(sessions):
            if predicate is not None and not predicate(session.state):
                continue
            if frame is None:
                frame = protocol.encode_data(message.data, message.event, message.id or None)
            ends = message.event in session.ends_on
            hold = session.hold
            if hold is not None:
                hold(message.id, frame, ends)
            elif not session.put(frame):
                continue
            elif ends:
                session.close()
            delivered += 1
        return delivered

    def count_matching(self, filter: Any = None) -> int:
        """Sessions in this process that ``filter`` (data or callable) matches."""
        predicate = filter if callable(filter) else compile_filter(filter)
        if predicate is None:
            return len(self._sessions)
        return sum(1 for session in list(self._sessions) if predicate(session.state))

    async def acount(self, filter: Any = None) -> int:
        """Matching sessions across all workers (this process only for a local channel)."""
        if self.local or callable(filter):
            return self.count_matching(filter)
        compile_filter(filter)
        return await get_backend().count(self.name, filter)

    def count(self, filter: Any = None) -> int:
        """``acount`` for sync code (admin views, management commands)."""
        return async_to_sync(self.acount)(filter)


def _sent(event_id: str, channel: Channel, message: Message) -> str:
    stats.events_published += 1
    if broadcast_sent.receivers:
        broadcast_sent.send(
            sender=Channel,
            channel=channel,
            id=event_id,
            event=message.event,
            data=message.data,
            filter=message.filter,
        )
    return event_id


def _publish_failed(message: Message, exc: BackendUnavailable) -> None:
    stats.publish_errors += 1
    log_publish_error(message.channel, exc)


def get_channel(name: str) -> Channel:
    """The process's channel called ``name`` (validated), shared with every worker."""
    return _registry.get(name) or Channel(name)


def create_channel() -> Channel:
    """A new anonymous channel that lives in this process only."""
    return Channel(f"local:{uuid.uuid4().hex}", local=True)


def broadcast(channel: str, data: Any, event: str | None = None, *, filter: Any = None) -> str:
    """``get_channel(channel).broadcast(...)``: publish from anywhere, sync code included."""
    return get_channel(channel).broadcast(data, event, filter=filter)


async def abroadcast(
    channel: str, data: Any, event: str | None = None, *, filter: Any = None
) -> str:
    """``await get_channel(channel).abroadcast(...)``."""
    return await get_channel(channel).abroadcast(data, event, filter=filter)


def on_control(event: str, handler: Callable[[Message], None]) -> None:
    """Hand control messages of type ``event`` (``stream_app.*``) to ``handler`` on delivery.

    The handler runs in the event loop that holds the sessions, in every worker.
    """
    if not event.startswith(CONTROL_PREFIX):
        raise ValueError(f"a control event type starts with {CONTROL_PREFIX!r}")
    _control_handlers[event] = handler


def leave_all(session: Session) -> None:
    """Deregister ``session`` from every channel it is on."""
    for channel in list(session.channels or ()):
        channel.deregister(session)


def deliver(message: Message) -> None:
    """The backend's delivery callback: fan a message out to this process's sessions.

    Control messages (``stream_app.*``) go to their ``on_control`` handler instead.
    """
    event = message.event
    if event is not None and event.startswith(CONTROL_PREFIX):
        handler = _control_handlers.get(event)
        if handler is not None:
            handler(message)
        return
    channel = _registry.get(message.channel)
    if channel is not None:
        for observer in list(channel._observers):
            observer(message)
        channel.fan_out(message)


async def subscribe(
    session: Session,
    channels: Iterable[Channel],
    *,
    then: Callable[[], Awaitable[object]] | None = None,
    from_start: bool = False,
) -> None:
    """Register ``session`` on ``channels`` and replay, as one ordered history, what it missed.

    What it missed is what the named channels published after its ``last_event_id`` (with
    ``from_start``, all their retained history). The live registration comes first and live
    events are held while history is paged into the session, so nothing falls between the
    two and nothing is sent twice (``stream_app.replay``). ``then`` runs once history is
    queued, before live events flow (connect hooks, a ``ready`` event).

    Without a replay ``then`` runs here and its exceptions propagate. With one, this returns
    once the replay is done, or once it waits for the client to drain its queue, or just
    before ``then``: the rest of the history, ``then`` and the hand-over follow as the client
    reads (the writer starts only once the view returns), and a failing ``then`` is logged
    and ends the stream.
    """
    channels = list(channels)
    names = [c.name for c in channels if not c.local]
    after = None if from_start else session.last_event_id
    replay = Replay(session, names, after) if names and (from_start or after) else None
    if replay is not None:
        session.hold = replay.hold
    for channel in channels:
        channel._add(session)
    if replay is None:
        # Live delivery first, so that a client told it is subscribed misses nothing published
        # from then on (a replay waits for it too). A backend that is down does not hold the
        # stream up: its listener subscribes when it reconnects.
        backend = get_backend()
        for name in names:
            await backend.ready(name, SUBSCRIBE_TIMEOUT)
        if then is not None:
            await then()
        return
    task = replay.start(then)
    try:
        # ``wait`` does not cancel what it waits for: a client that leaves ends the replay
        # through its session.
        await asyncio.wait([replay.settled])
    except asyncio.CancelledError:
        task.cancel()
        raise
    if task.done():
        task.result()


def track_presence(prefix: str) -> None:
    """Keep the backend's presence of channels named ``prefix...`` (it costs a write per
    channel and worker every few seconds: only for channels somebody asks about)."""
    if prefix not in _presence_prefixes:
        _presence_prefixes.append(prefix)


def count_local(channel: str, filter: Any) -> int:
    """Sessions in this process on ``channel`` matching filter data (for backends' counts)."""
    found = _registry.get(channel)
    return found.count_matching(filter) if found is not None else 0


def channel_snapshot() -> dict[str, int]:
    """Sessions per named channel in this process (for metrics)."""
    return {name: len(c._sessions) for name, c in _registry.items() if c._sessions}


def _history_lost(message: Message) -> None:
    """A backend's news that events may be lost (``HISTORY_LOST``): a ``reset`` to each
    session on a named channel, once however many of them it is on."""
    frame = protocol.encode_data(message.data, "reset")
    told: set[Session] = set()
    for channel in list(_registry.values()):
        for session in list(channel._sessions):
            if session in told:
                continue
            told.add(session)
            # Behind a replay's hold like any live event (no id: it is never a duplicate).
            hold = session.hold
            if hold is not None:
                hold("", frame, False)
            else:
                session.put(frame)


# The channel layer hands the backend its callbacks: backends never import this module.
attach(deliver, count_local)
on_control(HISTORY_LOST, _history_lost)
