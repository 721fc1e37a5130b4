"""Generation leases: which worker runs a generation, and how another could rerun it.

A generation whose source can be rebuilt (``stream_chat(...)`` with the process's own client,
JSON-able arguments) takes the lease ``generation:<id>`` of the backend (see ``Backend`` in
``stream_app.backends.base``; the Redis keys are listed in ``stream_app.backends.redis``) before
its first event. Its record is JSON ``{"request": {"messages", "model", "params"},
"on_finish": "<dotted path>" | null, "metadata", "grace", "coalesce_ms", "coalesce_chars",
"worker"}``; its heartbeat is renewed every ``GENERATION_HEARTBEAT`` seconds with a TTL of
``GENERATION_HEARTBEAT_TTL`` seconds, only while it is still this worker's, and released when
the generation finishes or is handed over on a graceful shutdown.

An unfinished generation whose heartbeat is gone has lost its worker (kill -9, crash, SIGTERM
hand-over): the next worker to claim the lease takes it over (``stream_app.llm.takeover``).
Only backends shared between processes lease: with one process (the memory backend) nobody
could take over, and a stalled event loop must not stop its own producer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.utils.module_loading import import_string

from ..backends import get_backend
from ..backends.base import BackendUnavailable
from ..conf import app_settings
from .registry import channel_name

if TYPE_CHECKING:
    from .generations import Generation

__all__ = [
    "alive",
    "claim",
    "dotted_path",
    "drop",
    "keep",
    "reclaim",
    "register",
    "release",
    "update_record",
]

logger = logging.getLogger("stream_app")


def _ttl() -> float:
    return float(app_settings.GENERATION_HEARTBEAT_TTL)


def _with_worker(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "worker": get_backend().worker}


async def register(generation_id: str, record: dict[str, Any]) -> bool:
    """Store the record and take the lease of a new generation; False where none is kept."""
    backend = get_backend()
    if backend.local_only:
        return False
    return await backend.lease_start(channel_name(generation_id), _with_worker(record), _ttl())


async def update_record(generation_id: str, record: dict[str, Any]) -> None:
    """Rewrite the record (this worker runs it now), keeping its TTL."""
    await get_backend().lease_update(channel_name(generation_id), _with_worker(record))


async def alive(generation_id: str) -> bool:
    """Whether some worker holds the generation's lease (True where none are kept)."""
    return await get_backend().lease_alive(channel_name(generation_id))


async def claim(generation_id: str) -> bool:
    """Take the lease of a generation whose heartbeat expired; True for exactly one worker."""
    return await get_backend().lease_claim(channel_name(generation_id), _ttl())


async def reclaim(generation_id: str) -> bool:
    """Hold the lease again if it is still this worker's or nobody's."""
    return await get_backend().lease_reclaim(channel_name(generation_id), _ttl())


async def release(generation_id: str) -> None:
    """Let the lease go if this worker holds it: the next resume takes over at once."""
    await get_backend().lease_release(channel_name(generation_id))


async def drop(generation_id: str) -> None:
    """Release the lease and delete the record of a finished generation."""
    await get_backend().lease_drop(channel_name(generation_id))


async def keep(generation: Generation) -> None:
    """Renew ``generation``'s lease until cancelled; tell it if the lease was lost."""
    period = float(app_settings.GENERATION_HEARTBEAT)
    ttl = _ttl()
    backend = get_backend()
    name = channel_name(generation.id)
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(period)
        sent = loop.time()
        try:
            held = await backend.lease_renew(name, ttl)
        except BackendUnavailable as exc:
            # Not renewed: the producer stops publishing once its local deadline passes.
            logger.warning("generation %s heartbeat: %s", generation.id, exc)
            continue
        if not held:
            logger.warning("generation %s: lease lost to another worker", generation.id)
            generation.lose_lease()
            return
        # Counted from before the request: the backend's own expiry is never earlier.
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
