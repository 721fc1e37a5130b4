"""Leases and presence on Redis: the keys, the scripts, and the commands of ``RedisBackend``.

A lease ``name`` (``generation:<id>`` for a generation) has two keys, hash-tagged by name so
that both live in one Redis Cluster slot:

- ``{prefix}:lease:{<name>}:run``: the record (JSON), with the history's TTL (``HISTORY_TTL``);
- ``{prefix}:lease:{<name>}:beat``: the heartbeat, holding the running worker's token, with a
  TTL the runner renews only while it still holds it (compare-and-expire) and deletes when it
  lets go (compare-and-delete). Taking an expired lease over is ``SET beat <token> NX PX ttl``:
  exactly one worker wins, however many try at once.

Presence of channel ``c`` is the sorted set ``{prefix}:w:{<c>}``: one member per worker that
has sessions on ``c``, scored with the time (Redis' clock, ms) until which it counts. A worker
adds itself when its first session arrives, removes itself when its last one leaves, and
renews every channel it is present on every ``PRESENCE_EVERY`` seconds with a TTL of
``PRESENCE_TTL``: a worker that dies without a word (kill -9) stops counting at most
``PRESENCE_TTL`` seconds after its last renewal. The key itself expires with the newest
member, so a channel nobody watches leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import redis
import redis.asyncio as aredis

from ...conf import app_settings
from ...redact import redact
from ...tasks import spawn
from ..base import Backend, BackendUnavailable, LeaseState
from .listener import NETWORK_ERRORS

__all__ = ["PRESENCE_EVERY", "PRESENCE_TTL", "RedisLeases"]

logger = logging.getLogger("stream_app")

PRESENCE_EVERY = 2.0
PRESENCE_TTL = 6.0

# Renew only if the beat is still ours: a worker that stalled past the TTL and was taken over
# must not extend the new owner's lease.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
# Hold the lease again after an outage, unless another worker took it meanwhile.
_RECLAIM = """
local holder = redis.call('GET', KEYS[1])
if holder == false or holder == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# Scores are Redis' own clock, so workers whose clocks disagree still agree on who counts.
_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""
_PRESENT = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""
)
_PRESENT_NOW = _NOW + "return redis.call('ZCOUNT', KEYS[1], '(' .. now, '+inf')"


def _ms(seconds: float) -> int:
    return int(seconds * 1000)


class RedisLeases(Backend):
    """The lease and presence commands of ``RedisBackend`` (see the module docstring)."""

    prefix: str
    presence_ttl = PRESENCE_TTL

    def __init__(self) -> None:
        super().__init__()
        # Channels this process has sessions on, renewed by one task per event loop.
        self.present: set[str] = set()
        self.presence_task: asyncio.Future[None] | None = None

    def client(self) -> aredis.Redis:
        """The asyncio client of the running loop (``RedisBackend`` implements it)."""
        raise NotImplementedError

    def unavailable(self, exc: BaseException) -> BackendUnavailable:
        """The error for an unreachable Redis (``RedisBackend`` implements it)."""
        raise NotImplementedError

    def lease_keys(self, name: str) -> tuple[str, str]:
        """The record and heartbeat keys of lease ``name``."""
        base = f"{self.prefix}:lease:{{{name}}}"
        return f"{base}:run", f"{base}:beat"

    def presence_key(self, channel: str) -> str:
        """The sorted set of the workers present on ``channel``."""
        return f"{self.prefix}:w:{{{channel}}}"

    async def _call(self, coro: Any) -> Any:
        try:
            return await coro
        except (*NETWORK_ERRORS, redis.RedisError) as exc:
            raise self.unavailable(exc) from exc

    def _text(self, record: dict[str, Any]) -> str:
        return json.dumps(record, separators=(",", ":"))

    # -- leases ---------------------------------------------------------------------------------

    async def lease_start(self, name: str, record: dict[str, Any], ttl: float) -> bool:
        """Store the record and hold the lease, in one transaction."""
        run, beat = self.lease_keys(name)
        async with self.client().pipeline(transaction=True) as pipe:
            pipe.set(run, self._text(record), px=_ms(app_settings.HISTORY_TTL))
            pipe.set(beat, self.worker, px=_ms(ttl))
            await self._call(pipe.execute())
        return True

    async def lease_update(self, name: str, record: dict[str, Any]) -> None:
        """Replace the record, keeping its TTL."""
        run, _ = self.lease_keys(name)
        await self._call(self.client().set(run, self._text(record), keepttl=True))

    async def lease_state(self, name: str) -> LeaseState:
        """The record and whether the heartbeat is alive, in one round trip."""
        run, beat = self.lease_keys(name)
        async with self.client().pipeline(transaction=False) as pipe:
            pipe.get(run)
            pipe.exists(beat)
            text, alive = await self._call(pipe.execute())
        record = None
        if text:
            try:
                record = json.loads(text)
            except ValueError:
                logger.warning("lease %s: unreadable record", name)
        return LeaseState(record if isinstance(record, dict) else None, bool(alive))

    async def lease_alive(self, name: str) -> bool:
        """Whether the heartbeat exists (one ``EXISTS``)."""
        return bool(await self._call(self.client().exists(self.lease_keys(name)[1])))

    async def lease_claim(self, name: str, ttl: float) -> bool:
        """``SET beat <token> NX PX ttl``."""
        beat = self.lease_keys(name)[1]
        return bool(await self._call(self.client().set(beat, self.worker, nx=True, px=_ms(ttl))))

    async def lease_renew(self, name: str, ttl: float) -> bool:
        """Compare-and-expire."""
        beat = self.lease_keys(name)[1]
        return bool(await self._call(self.client().eval(_RENEW, 1, beat, self.worker, _ms(ttl))))

    async def lease_reclaim(self, name: str, ttl: float) -> bool:
        """Hold the heartbeat again if it is ours or gone."""
        beat = self.lease_keys(name)[1]
        found = await self._call(self.client().eval(_RECLAIM, 1, beat, self.worker, _ms(ttl)))
        return bool(found)

    async def lease_release(self, name: str) -> None:
        """Compare-and-delete."""
        beat = self.lease_keys(name)[1]
        await self._call(self.client().eval(_RELEASE, 1, beat, self.worker))

    async def lease_drop(self, name: str) -> None:
        """Release the heartbeat (if ours) and delete the record."""
        await self.lease_release(name)
        await self._call(self.client().delete(self.lease_keys(name)[0]))

    # -- presence -------------------------------------------------------------------------------

    def add_presence(self, channel: str) -> None:
        """Count this worker on ``channel`` at once, and renew it while it has sessions."""
        # Bind the client to this loop first: a new loop forgets the old loop's renewal task.
        self.client()
        self.present.add(channel)
        spawn(self._mark([channel]))
        if self.presence_task is None or self.presence_task.done():
            self.presence_task = spawn(self._renew_presence())

    def remove_presence(self, channel: str) -> None:
        """Stop counting this worker on ``channel`` (at once, and no more renewals)."""
        self.present.discard(channel)
        spawn(self._unmark(channel))

    async def has_presence(self, channel: str) -> bool:
        """Whether any worker's mark on ``channel`` is still valid (one script, one key)."""
        script = self.client().eval(_PRESENT_NOW, 1, self.presence_key(channel))
        return bool(await self._call(script))

    async def _mark(self, channels: list[str]) -> None:
        try:
            async with self.client().pipeline(transaction=False) as pipe:
                for channel in channels:
                    key = self.presence_key(channel)
                    pipe.eval(_PRESENT, 1, key, self.worker, _ms(PRESENCE_TTL))
                await pipe.execute()
        except (*NETWORK_ERRORS, redis.RedisError) as exc:
            # The next renewal tries again; meanwhile other workers may not count this one.
            logger.warning(
                "could not renew presence on %d channels: %s", len(channels), redact(str(exc))
            )

    async def _unmark(self, channel: str) -> None:
        try:
            await self.client().zrem(self.presence_key(channel), self.worker)
        except (*NETWORK_ERRORS, redis.RedisError) as exc:
            logger.warning(
                "could not remove presence on %r (it expires): %s", channel, redact(str(exc))
            )

    async def _renew_presence(self) -> None:
        while self.present:
            await asyncio.sleep(PRESENCE_EVERY)
            if self.present:
                await self._mark(list(self.present))
