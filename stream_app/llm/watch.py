"""A generation's watcher: stops it on a cancel from another worker or without listeners."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import TYPE_CHECKING

from ..backends import get_backend
from ..backends.base import BackendUnavailable, Message
from .registry import channel_name

if TYPE_CHECKING:
    from .generations import Generation

__all__ = ["CANCEL_POLL", "watch"]

logger = logging.getLogger("stream_app")

# How often the producer looks for a cancel published by another worker (shared backends).
CANCEL_POLL = 0.25


async def watch(generation: Generation) -> None:
    """Cancel on a cancel event from another worker or a long absence of listeners."""
    backend = get_backend()
    poll = not backend.local_only
    count_every = min(1.0, max(0.05, generation.grace / 4))
    tick = min(CANCEL_POLL, count_every) if poll else count_every
    loop = asyncio.get_running_loop()
    seen = generation.first_id or "0-0"
    quiet_since: float | None = None
    next_count = loop.time()
    while generation.result is None:
        await asyncio.sleep(tick)
        try:
            if poll:
                history = await backend.history([channel_name(generation.id)], seen)
                for message in history.messages:
                    seen = message.id
                    if message.event == "cancel":
                        generation.cancel(_cancel_reason(message))
                        return
            now = loop.time()
            if now < next_count:
                continue
            next_count = now + count_every
            if await generation.channel.acount() > 0:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= generation.grace:
                logger.info("generation %s: no listener for %.0fs", generation.id, generation.grace)
                generation.cancel("no_listener")
                return
        except BackendUnavailable as exc:
            logger.warning("generation %s watcher: %s", generation.id, exc)


def _cancel_reason(message: Message) -> str:
    try:
        reason = json.loads(message.data).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return reason if isinstance(reason, str) and len(reason) < 40 else "user"
