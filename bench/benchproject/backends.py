"""The memory and Redis backends, counting their history reads for the reconnect storm.

A history read is one call of ``Backend.history`` (one page of a replay); it is counted once
per channel it reads. Live delivery never calls it, so the count costs the hot path nothing;
a replay pays one dict update per channel read. For Redis the benchmark also reads the
server's own ``INFO commandstats`` (XRANGE, XREVRANGE, XREAD calls), which counts what
actually went over the wire, whatever the backend shares above or below this method.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from stream_app.backends.base import Backend, History
from stream_app.backends.memory import MemoryBackend
from stream_app.backends.redis import RedisBackend

__all__ = ["CountingMemoryBackend", "CountingRedisBackend", "HistoryCounter", "history_reads"]

#: History reads of this process per channel name.
history_reads: Counter[str] = Counter()


class HistoryCounter(Backend):
    """Counts each ``history`` call in ``history_reads``, then reads as the next class does.

    Listed first in a subclass's bases, so that its ``history`` runs before the backend's.
    """

    async def history(
        self, channels: Iterable[str], after: str | None, limit: int | None = None
    ) -> History:
        """Count, then read."""
        names = list(channels)
        history_reads.update(names)
        return await super().history(names, after, limit)


class CountingMemoryBackend(HistoryCounter, MemoryBackend):
    """``MemoryBackend`` that counts its history reads in ``history_reads``."""


class CountingRedisBackend(HistoryCounter, RedisBackend):
    """``RedisBackend`` that counts its history reads in ``history_reads``."""
