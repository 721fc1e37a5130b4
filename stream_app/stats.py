"""Process-wide counters of sessions and events, and the set of streaming sessions."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .session import Session

__all__ = ["SessionStats", "live_sessions", "stats"]


class SessionStats:
    """Process-wide counters, read by the metrics endpoint and the tests."""

    __slots__ = (
        "closed",
        "events_published",
        "events_queued",
        "opened",
        "publish_errors",
        "replay_hits",
        "replay_resets",
        "slow_consumers",
    )

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.slow_consumers = 0
        self.events_queued = 0
        # Counted in channels: broadcasts published / refused by the backend, and replays
        # that found the client's Last-Event-ID / sent it a reset event instead.
        self.events_published = 0
        self.publish_errors = 0
        self.replay_hits = 0
        self.replay_resets = 0

    @property
    def open(self) -> int:
        """Sessions streaming now."""
        return self.opened - self.closed


stats = SessionStats()

#: Every session streaming in this process (for graceful shutdown and metrics).
live_sessions: set[Session] = set()
