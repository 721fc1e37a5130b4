"""The keep-alive timer: one per event loop, walking every streaming session."""

from __future__ import annotations

import asyncio
import weakref
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Heartbeat", "heartbeat"]


class Heartbeat:
    """One timer per event loop that writes keep-alive comments to every quiet session.

    A timer per session would cost a handle and a reschedule on every write; walking the sessions
    every quarter of the shortest keep-alive costs a few nanoseconds per session instead. A
    session hears a comment after between 1 and 1.25 keep-alive periods of silence.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sessions: set[Session] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.tick = 1.0

    def add(self, session: Session) -> None:
        """Walk ``session`` on every beat (and beat often enough for its keep-alive)."""
        self.sessions.add(session)
        # Lifetimes and write timeouts need no finer clock than a second.
        tick = max(0.01, session.keep_alive / 4) if session.keep_alive else 1.0
        if self.handle is None or tick < self.tick:
            self.tick = tick if self.handle is None else min(self.tick, tick)
            if self.handle is not None:
                self.handle.cancel()
            self.handle = self.loop.call_later(self.tick, self._beat)

    def discard(self, session: Session) -> None:
        """Stop walking ``session``; the timer stops with the last one."""
        self.sessions.discard(session)
        if not self.sessions and self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _beat(self) -> None:
        now = self.loop.time()
        for session in self.sessions:
            session.tick(now)
        self.handle = self.loop.call_later(self.tick, self._beat) if self.sessions else None


_heartbeats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Heartbeat] = (
    weakref.WeakKeyDictionary()
)


def heartbeat() -> Heartbeat:
    """The running loop's heartbeat."""
    loop = asyncio.get_running_loop()
    beat = _heartbeats.get(loop)
    if beat is None:
        beat = _heartbeats[loop] = Heartbeat(loop)
    return beat
