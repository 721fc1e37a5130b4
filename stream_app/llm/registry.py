"""Where generations run and who owns them, as any worker can tell.

A generation's producer runs in one process (``get_local``); every other worker knows it only
through the backend's history of its channel ``generation:<id>``: ``lookup`` reads the owner
from the filter its events carry, whether it finished, and whether its producer is gone: from
the backend's lease ``generation:<id>`` when it has a record (``stream_app.llm.leases``), else
from the age of its last event.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.utils.crypto import salted_hmac

from ..backends import get_backend
from ..backends.base import Backend, Message, id_key
from ..channels import track_presence
from ..conf import app_settings
from .events import TERMINAL_EVENTS

if TYPE_CHECKING:
    from .generations import Generation

__all__ = [
    "GenerationInfo",
    "channel_name",
    "get_local",
    "local_generations",
    "lookup",
    "owner_digest",
    "wait_for_listener",
]

#: Generations whose producer runs in this process, by id (kept by ``Generation`` itself).
local_generations: dict[str, Generation] = {}


#: Every worker can ask whether anyone watches a generation (``Backend.has_presence``).
track_presence("generation:")


def channel_name(generation_id: str) -> str:
    """The channel a generation publishes to."""
    return f"generation:{generation_id}"


def owner_digest(owner: str) -> str:
    """The digest that stands for ``owner`` (``user:<pk>`` or ``session:<key>``) in events."""
    return salted_hmac("stream_app.llm.generation", owner, algorithm="sha256").hexdigest()[:32]


def get_local(generation_id: str) -> Generation | None:
    """The generation with this id if its producer runs in this process."""
    return local_generations.get(generation_id)


@dataclass
class GenerationInfo:
    """What any worker can tell about a generation from the backend's history."""

    id: str
    owner: str
    first_id: str
    terminal_id: str | None
    messages: list[Message]
    #: Unfinished, and its producer is gone (its worker died, restarted or handed it over):
    #: nothing will finish it unless a worker takes it over (``record`` is not None).
    orphaned: bool = False
    #: How to rerun it (``stream_app.llm.leases``), None if it cannot be taken over.
    record: dict[str, Any] | None = None

    @property
    def finished(self) -> bool:
        """Whether the ``done`` or ``error`` event was published."""
        return self.terminal_id is not None


async def lookup(generation_id: str) -> GenerationInfo | None:
    """The generation's owner and state from its history; None if unknown or expired."""
    history = await get_backend().history([channel_name(generation_id)], "0-0")
    messages = history.messages
    if not messages:
        return None
    spec = messages[0].filter
    owner = spec.get("owner") if isinstance(spec, dict) else None
    if not isinstance(owner, str):
        return None
    terminal = next((m.id for m in messages if m.event in TERMINAL_EVENTS), None)
    info = GenerationInfo(generation_id, owner, messages[0].id, terminal, messages)
    if terminal is None and generation_id not in local_generations:
        lease = await get_backend().lease_state(channel_name(generation_id))
        if lease is not None and lease.record is not None:
            info.record = lease.record
            info.orphaned = not lease.alive
        else:
            info.orphaned = _producer_gone(messages[-1].id)
    return info


def _producer_gone(last_id: str) -> bool:
    """Whether an unfinished generation that does not run here has lost its producer."""
    backend = get_backend()
    if backend.local_only:
        # One process holds every producer, and it is not this one's.
        return True
    # Shared backends (Redis) give ids from the clock, ``<ms>-<seq>``. A live producer
    # publishes at least once per LLM_TIMEOUT (the upstream's read timeout ends it otherwise).
    key = id_key(last_id)
    if key is None:
        return False
    idle = time.time() - key[0] / 1000
    return idle > float(app_settings.LLM_TIMEOUT) + float(app_settings.GENERATION_GRACE) + 5


async def wait_for_listener(backend: Backend, timeout: float = 2.0) -> None:
    """Wait (bounded) until a backend with a listener connection has it connected.

    The Redis backend starts its listener on the first subscription of a process; events
    published before it has subscribed are not delivered live. Waiting here before reading
    history closes that window for the first stream of a worker.
    """
    if getattr(backend, "connected", True):
        return
    deadline = time.monotonic() + timeout
    # The backend exposes no connection event: poll its flag, briefly and bounded.
    while not getattr(backend, "connected", True) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.01)
