"""Generation leases on a shared backend: which worker runs a generation, and how to rerun it.

On the Redis backend every generation whose source can be rebuilt (``stream_chat(...)`` with
the process's own client, JSON-able arguments) gets two keys next to its channel's stream:

- ``{prefix}:gen:{id}:run``: its record, JSON ``{"request": {"messages", "model", "params"},
  "on_finish": "<dotted path>" | null, "metadata", "grace", "coalesce_ms", "coalesce_chars",
  "worker"}``, written before the first event, with the history's TTL (``HISTORY_TTL``).
- ``{prefix}:gen:{id}:beat``: the heartbeat, holding the running worker's token, with a TTL of
  ``GENERATION_HEARTBEAT_TTL`` seconds; the producer refreshes it every
  ``GENERATION_HEARTBEAT`` seconds, only while it still holds it (compare-and-expire), and
  deletes it (compare-and-delete) when it finishes or hands over on a graceful shutdown.

An unfinished generation whose heartbeat is gone has lost its worker (kill -9, crash, SIGTERM
hand-over). Taking it over is ``SET beat <token> NX PX ttl``: Redis lets exactly one worker
win, however many resume it at once (see ``stream_app.llm.takeover``).

This module talks to the Redis backend's asyncio client (``RedisBackend.client()``) without
importing ``redis`` itself; on any other backend every function is a no-op (``None``/False).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from ..backends import get_backend
from ..backends.base import BackendUnavailable
from ..conf import app_settings
from ..redact import redact

if TYPE_CHECKING:
    from .generations import Generation

__all__ = [
    "WORKER",
    "LeaseState",
    "alive",
    "claim",
    "dotted_path",
    "drop",
    "keep",
    "reclaim",
    "register",
    "release",
    "state",
    "update_record",
]

logger = logging.getLogger("stream_app")

#: This process's token in heartbeats: readable in ``redis-cli``, unique across restarts.
WORKER = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"

# Refresh the TTL only if the beat is still ours: a worker that stalled past the TTL and was
# taken over must not extend the new owner's lease.
_REFRESH = """
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


@dataclass(frozen=True, slots=True)
class LeaseState:
    """A generation's record (None if it cannot be rerun) and whether its heartbeat is alive."""

    record: dict[str, Any] | None
    alive: bool


def _redis() -> tuple[Any, str] | None:
    """The Redis client of the running loop and the key prefix, or None on other backends."""
    backend = get_backend()
    if backend.local_only or "stream_app.backends.redis" not in sys.modules:
        return None
    from ..backends.redis import RedisBackend

    if not isinstance(backend, RedisBackend):
        return None
    return backend.client(), f"{backend.prefix}:gen"


def _ttl_ms() -> int:
    return int(float(app_settings.GENERATION_HEARTBEAT_TTL) * 1000)


async def _call(coro: Any) -> Any:
    # redis-py raises its own exception types; this module does not import them, so any
    # failure of a command is reported the way the backend reports its own.
    try:
        return await coro
    except (asyncio.CancelledError, BackendUnavailable):
        raise
    except Exception as exc:
        raise BackendUnavailable(redact(f"Redis: {type(exc).__name__}: {exc}")) from exc


async def register(generation_id: str, record: dict[str, Any]) -> bool:
    """Store the record and start the heartbeat of a new generation; False off Redis."""
    redis = _redis()
    if redis is None:
        return False
    client, prefix = redis
    history_ms = int(float(app_settings.HISTORY_TTL) * 1000)
    text = json.dumps({**record, "worker": WORKER}, separators=(",", ":"))
    async with client.pipeline(transaction=True) as pipe:
        pipe.set(f"{prefix}:{generation_id}:run", text, px=history_ms)
        pipe.set(f"{prefix}:{generation_id}:beat", WORKER, px=_ttl_ms())
        await _call(pipe.execute())
    return True


async def update_record(generation_id: str, record: dict[str, Any]) -> None:
    """Rewrite the record (a new worker runs it now), keeping its TTL."""
    redis = _redis()
    if redis is not None:
        client, prefix = redis
        text = json.dumps({**record, "worker": WORKER}, separators=(",", ":"))
        await _call(client.set(f"{prefix}:{generation_id}:run", text, keepttl=True))


async def state(generation_id: str) -> LeaseState | None:
    """The generation's record and heartbeat; None off Redis."""
    redis = _redis()
    if redis is None:
        return None
    client, prefix = redis
    async with client.pipeline(transaction=False) as pipe:
        pipe.get(f"{prefix}:{generation_id}:run")
        pipe.exists(f"{prefix}:{generation_id}:beat")
        text, beat = await _call(pipe.execute())
    record = None
    if text:
        try:
            record = json.loads(text)
        except ValueError:
            logger.warning("generation %s: unreadable record", generation_id)
    return LeaseState(record if isinstance(record, dict) else None, bool(beat))


async def alive(generation_id: str) -> bool:
    """Whether some worker's heartbeat for the generation is alive (True off Redis)."""
    redis = _redis()
    if redis is None:
        return True
    client, prefix = redis
    return bool(await _call(client.exists(f"{prefix}:{generation_id}:beat")))


async def claim(generation_id: str) -> bool:
    """Take the lease of a generation whose heartbeat expired; True for exactly one worker."""
    redis = _redis()
    if redis is None:
        return False
    client, prefix = redis
    key = f"{prefix}:{generation_id}:beat"
    return bool(await _call(client.set(key, WORKER, nx=True, px=_ttl_ms())))


async def reclaim(generation_id: str) -> bool:
    """Hold the lease again if it is still this worker's or nobody's; True off Redis."""
    redis = _redis()
    if redis is None:
        return True
    client, prefix = redis
    key = f"{prefix}:{generation_id}:beat"
    return bool(await _call(client.eval(_RECLAIM, 1, key, WORKER, str(_ttl_ms()))))


async def release(generation_id: str) -> None:
    """Delete the heartbeat if this worker holds it: the next resume takes over at once."""
    redis = _redis()
    if redis is not None:
        client, prefix = redis
        await _call(client.eval(_RELEASE, 1, f"{prefix}:{generation_id}:beat", WORKER))


async def drop(generation_id: str) -> None:
    """Delete the record and the heartbeat of a finished generation (if still ours)."""
    redis = _redis()
    if redis is not None:
        client, prefix = redis
        await release(generation_id)
        await _call(client.delete(f"{prefix}:{generation_id}:run"))


async def keep(generation: Generation) -> None:
    """Refresh ``generation``'s heartbeat until cancelled; tell it if the lease was lost."""
    period = float(app_settings.GENERATION_HEARTBEAT)
    ttl = float(app_settings.GENERATION_HEARTBEAT_TTL)
    redis = _redis()
    if redis is None:
        return
    client, prefix = redis
    key = f"{prefix}:{generation.id}:beat"
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(period)
        sent = loop.time()
        try:
            held = await _call(client.eval(_REFRESH, 1, key, WORKER, str(_ttl_ms())))
        except BackendUnavailable as exc:
            # Not refreshed: the producer stops publishing once its local deadline passes.
            logger.warning("generation %s heartbeat: %s", generation.id, exc)
            continue
        if not held:
            logger.warning("generation %s: lease lost to another worker", generation.id)
            generation.lose_lease()
            return
        # Counted from before the request: Redis' own expiry is never earlier than this.
        generation.lease_until = sent + ttl


def dotted_path(function: Callable[..., Any] | None) -> str | None:
    """The import path of a module-level ``function`` (how another worker finds it), or None."""
    if function is None:
        return None
    path = f"{getattr(function, '__module__', '')}.{getattr(function, '__qualname__', '')}"
    try:
        found = import_string(path)
    except ImportError:
        found = None
    if found is not function:
        logger.warning("on_finish %r is not importable: a takeover will not call it", function)
        return None
    return path
