"""Replay: what a reconnecting client missed, paged from the backend's history as it drains.

The one replay path, used by ``channels.subscribe`` (and so ``stream_view`` and the generation
views) and ``Channel.register`` (channels registered in a row join the replay that has not run
yet: ``pending``). A ``Replay`` runs like this:

1. The session is registered live on its channels *before* history is read, with its ``hold``
   set: live delivery hands each filtered frame to the replay instead of queueing it. History
   is read once the backend has confirmed those subscriptions (``ready``, at most
   ``SUBSCRIBE_TIMEOUT`` each: a backend that is down does not hold the stream up).
2. History is read in pages of at most ``PAGE_SIZE`` events (never more than the session's
   ``max_queue``) after the client's id, filtered with exactly the predicates live delivery
   uses (``filters.cached_filter``), and queued one frame at a time, waiting for room in the
   session's queue: however long the history, a session holds at most one page, its queue
   and its hold buffer. The client drains it, so a client any number of events behind resumes.
3. When history is exhausted, the optional ``then`` step runs (connect hooks, the ``ready``
   event), then the held live frames are queued, skipping every id history already gave: no
   gap, no duplicate. The hold buffer is bounded by ``max_queue``: when it overflows, the
   frames history also has are dropped and paged from history again instead.
4. History that cannot cover the gap sends one ``reset`` event (``invalid_id``,
   ``history_expired`` or ``history_unavailable``) and the replay goes on with what is left.
   One per session: a session registered on several channels one by one
   (``Channel.register``, a replay each) is told once.

``coverage(session)`` tells later steps (the notifications backlog) what the history covered,
so nobody reads it a second time.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

from . import protocol
from .backends import get_backend
from .backends.base import Message, id_key
from .encoding import compact_json
from .filters import FilterError, Predicate, cached_filter
from .sessions import Session, stats
from .tasks import spawn

__all__ = [
    "PAGE_SIZE",
    "SUBSCRIBE_TIMEOUT",
    "Coverage",
    "Replay",
    "compiled_filter",
    "coverage",
    "pending",
    "reset_frame",
]

logger = logging.getLogger("stream_app")

#: Most events read from history at a time (and never more than a session's ``max_queue``).
PAGE_SIZE = 100
#: Seconds to wait for the backend to confirm a live subscription before reading history.
SUBSCRIBE_TIMEOUT = 2.0

_coverages: weakref.WeakKeyDictionary[Session, Coverage] = weakref.WeakKeyDictionary()
# Sessions a replay has sent its ``reset``: one each, however many replays they have.
_reset_sessions: weakref.WeakSet[Session] = weakref.WeakSet()
# Replays started but not yet running, by session: more channels may join them.
_pending: weakref.WeakKeyDictionary[Session, Replay] = weakref.WeakKeyDictionary()


def compiled_filter(spec: Any) -> Predicate | None:
    """The predicate of a message's filter, as live delivery and replay both apply it.

    A filter this process refuses (over the limits, malformed: published by older code or a
    script writing to the backend) matches nobody, with a warning.
    """
    if callable(spec):
        return spec  # type: ignore[no-any-return]
    try:
        return cached_filter(spec)
    except FilterError as exc:
        logger.warning("dropped an event whose filter was refused: %s", exc)
        return _match_nothing


def _match_nothing(state: Any) -> bool:
    return False


def reset_frame(after: str, reason: str) -> bytes:
    """The ``reset`` event telling a client that history cannot cover its gap."""
    stats.replay_resets += 1
    body = {"reason": reason, "last_event_id": after[:64]}
    return protocol.encode_data(compact_json(body), "reset")


class Coverage:
    """What a replay found in history: per channel, the key of its first event after the
    client's id. An event of that channel from that key on was replayed (when its filter
    matched the session); an older one, or one of a channel absent here, was not."""

    __slots__ = ("after", "first")

    def __init__(self, after: str | None) -> None:
        self.after = after
        self.first: dict[str, tuple[int, ...]] = {}

    def covers(self, channel: str, event_id: str) -> bool:
        """Whether the event ``event_id`` of ``channel`` came from history (or is older)."""
        key = id_key(event_id)
        if key is None:
            return False
        after = id_key(self.after) if self.after else None
        if after is not None and key <= after:
            return True
        first = self.first.get(channel)
        return first is not None and key >= first


def coverage(session: Session) -> Coverage | None:
    """What the session's replay covered, once its history is read; None without a replay."""
    return _coverages.get(session)


def pending(session: Session) -> Replay | None:
    """The session's replay that is started but has not read history yet, if any: a channel
    added to its ``channels`` now is replayed with the others, as one ordered history."""
    return _pending.get(session)


class Replay:
    """Pages the history of ``channels`` after ``after`` (None: from the start) into ``session``.

    Build it, set ``session.hold = replay.hold`` before registering the session live, then
    ``await replay.run()`` (or ``start``). See the module docstring.
    """

    def __init__(self, session: Session, channels: list[str], after: str | None) -> None:
        self.session = session
        self.channels = channels
        self.after = after
        self.limit = max(1, min(PAGE_SIZE, session.max_queue // 2))
        self.held: deque[tuple[str, bytes, bool]] = deque()
        self.overflowed = False
        # The last id history gave (delivered or filtered out): held frames up to it are dupes.
        self.cursor: tuple[int, ...] | None = None
        self.coverage = Coverage(after)
        # Resolved when the replay first waits for the client, or ends: see ``start``.
        self.settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def hold(self, event_id: str, frame: bytes, ends: bool) -> None:
        """Live delivery's hand-off while history is read (``Session.hold``)."""
        held = self.held
        if len(held) >= self.session.max_queue:
            # Bounded: drop what history also has (it is paged again), keep the rest.
            kept = [item for item in held if id_key(item[0]) is None]
            held.clear()
            held.extend(kept)
            self.overflowed = True
            if len(held) >= self.session.max_queue:
                # Only events without history (process-local channels): nothing can restore
                # them, so the session goes as a slow consumer would.
                self._put(frame, ends)
                held.clear()
                return
        held.append((event_id, frame, ends))

    def _put(self, frame: bytes, ends: bool) -> None:
        # The end of the stream is known from the event's type, given here as ``ends``.
        if self.session.put(frame) and ends:
            self.session.close()

    def _after_hand_over(self, event_id: str, frame: bytes, ends: bool) -> None:
        # A live event in flight when history was read (Redis' listener delivers after the
        # stream has it) arrives once more: skip it. Ids arrive in order, so the first newer
        # one ends the check.
        key = id_key(event_id)
        if key is not None and self.cursor is not None and key <= self.cursor:
            return
        self.session.hold = None
        self._put(frame, ends)

    def start(self, then: Callable[[], Awaitable[object]] | None = None) -> asyncio.Future[Any]:
        """Run the replay in the background; ``settled`` resolves once it waits or ends.

        ``then`` runs after ``settled`` (its caller may be gone): its failure is logged and
        closes the session.
        """
        _pending[self.session] = self
        return spawn(self.run(then))

    async def run(self, then: Callable[[], Awaitable[object]] | None = None) -> None:
        """Replay, run ``then``, and hand over to live delivery (see the module docstring)."""
        session = self.session
        if _pending.get(session) is self:
            del _pending[session]
        session.hold = self.hold
        try:
            await self._replay()
            _coverages[session] = self.coverage
            if session.is_closed:
                return
            if then is not None:
                # What ``then`` queues may need the client to read (the writer starts once
                # the view returns): let the caller go on.
                self._settle()
                try:
                    await then()
                except Exception:
                    logger.exception("a step after replay failed; the stream ends")
                    session.close()
                    return
            await self._hand_over()
        finally:
            if session.hold == self.hold:
                session.hold = None
            self._settle()

    def _settle(self) -> None:
        if not self.settled.done():
            self.settled.set_result(None)

    async def _replay(self) -> None:
        after = self.after
        backend = get_backend()
        if after is not None and not backend.valid_id(after):
            self._reset("invalid_id")
            return
        # Live first: an event published before the subscription is confirmed and after
        # history is read would be in neither.
        for name in self.channels:
            await backend.ready(name, SUBSCRIBE_TIMEOUT)
        try:
            await self._pages(after)
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("replay failed; the session continues live")
            self._reset("history_unavailable")

    def _reset(self, reason: str) -> None:
        if self.session not in _reset_sessions:
            _reset_sessions.add(self.session)
            self.session.put(reset_frame(self.after or "", reason))

    async def _room(self) -> bool:
        session = self.session
        if session.queued < session.max_queue:
            return not session.is_closed
        self._settle()
        return await session.wait_for_room()

    async def _pages(self, after: str | None) -> None:
        backend = get_backend()
        if not backend.keeps_history:
            if after is not None:
                self._reset("history_unavailable")
            return
        first = True
        while True:
            page = await backend.history(self.channels, after, self.limit)
            if not page.complete:
                self._reset("history_expired")
            elif first and after is not None:
                stats.replay_hits += 1
            first = False
            for message in page.messages:
                if not await self._room():
                    return
                self._deliver(message)
            if page.messages:
                after = page.messages[-1].id
            if len(page.messages) < self.limit:
                if not self.overflowed:
                    return
                # Live events were dropped from the hold: history has them.
                self.overflowed = False

    def _deliver(self, message: Message) -> None:
        key = id_key(message.id)
        if key is not None:
            self.cursor = key
            self.coverage.first.setdefault(message.channel, key)
        predicate = compiled_filter(message.filter)
        if predicate is None or predicate(self.session.state):
            frame = protocol.encode_data(message.data, message.event, message.id)
            self._put(frame, message.event in self.session.ends_on)

    async def _hand_over(self) -> None:
        """Queue the held live frames newer than history, then let live delivery through."""
        session = self.session
        held = self.held
        while True:
            while held:
                if not await self._room():
                    return
                if self.overflowed:
                    break
                event_id, frame, ends = held.popleft()
                key = id_key(event_id)
                if key is not None and self.cursor is not None:
                    if key <= self.cursor:
                        continue
                    self.cursor = key
                self._put(frame, ends)
            if not self.overflowed:
                # No await between the last check and this: nothing falls in between.
                session.hold = self._after_hand_over
                return
            self.overflowed = False
            after = f"{self.cursor[0]}-{self.cursor[1]}" if self.cursor else self.after
            await self._pages(after)
