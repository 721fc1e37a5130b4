"""A generation's watcher: stops it on a cancel from another worker or without listeners.

Cancel: the producer observes its channel (``Channel.observe``), so a ``cancel`` event that any
worker publishes reaches it by the backend's delivery path, as live events reach sessions:
nothing polls history. (One read of the history after subscribing catches a cancel published
before the subscription took effect, as for a generation just taken over.)

Listeners: every ``min(1, grace / 4)`` seconds it asks the backend whether any worker has a
session on the channel (``Backend.has_presence``; on Redis one read of one key, not a question
to every worker). With none for ``grace`` seconds the generation is cancelled
(``no_listener``). A worker killed without a word stops counting within the backend's
``presence_ttl``, so its generations elsewhere are cancelled at most
``presence_ttl + grace + one check`` seconds after its death.
"""

from __future__ import annotations

import asyncio
import json
import logging
from functools import partial
from typing import TYPE_CHECKING

from ..backends import get_backend
from ..backends.base import BackendUnavailable, Message

if TYPE_CHECKING:
    from .generations import Generation

__all__ = ["READY_TIMEOUT", "watch"]

logger = logging.getLogger("stream_app")

#: Most seconds to wait for the backend to confirm the producer's subscription.
READY_TIMEOUT = 2.0


async def watch(generation: Generation) -> None:
    """Cancel ``generation`` on a cancel event or a long absence of listeners (see above)."""
    backend = get_backend()
    channel = generation.channel
    heard = partial(_heard, generation)
    stop = channel.observe(heard)
    loop = asyncio.get_running_loop()
    every = min(1.0, max(0.05, generation.grace / 4))
    quiet_since: float | None = None
    try:
        try:
            await backend.ready(channel.name, READY_TIMEOUT)
            for message in (await backend.history([channel.name], generation.first_id)).messages:
                heard(message)
        except BackendUnavailable as exc:
            logger.warning("generation %s watcher: %s", generation.id, exc)
        while generation.result is None and generation.cancel_reason is None:
            await asyncio.sleep(every)
            try:
                present = await backend.has_presence(channel.name)
            except BackendUnavailable as exc:
                logger.warning("generation %s watcher: %s", generation.id, exc)
                continue
            now = loop.time()
            if present:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = now
            elif now - quiet_since >= generation.grace:
                logger.info("generation %s: no listener for %.0fs", generation.id, generation.grace)
                generation.cancel("no_listener")
    finally:
        stop()


def _heard(generation: Generation, message: Message) -> None:
    """A message delivered on the generation's channel: a cancel of its owner stops it."""
    if message.event == "cancel" and message.filter == generation.filter:
        generation.cancel(_cancel_reason(message))


def _cancel_reason(message: Message) -> str:
    try:
        reason = json.loads(message.data).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return reason if isinstance(reason, str) and len(reason) < 40 else "user"
