"""How a generation ends: its result, ``on_finish``, and its last event, whatever the backend does.

The answer is saved (``on_finish``) *before* the last event is published, so a client that
reloads after ``done`` finds it saved.

The end is never lost: if the backend refuses the last event (Redis is down at that moment),
this process's own listeners get it anyway (delivered here, without an id) so that their
streams end, and it is published again every ``GENERATION_HEARTBEAT`` seconds (at most one)
once the backend is back, still holding the lease, so that listeners on other workers and
clients that resume learn it too (``finish``). A generation handed over on a graceful shutdown
publishes no end: it releases its lease so that another worker continues it at once (``leave``).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.core.serializers.json import DjangoJSONEncoder

from ..backends.base import BackendUnavailable, Message
from ..conf import app_settings
from ..tasks import spawn
from . import leases
from .events import Done, Error, ToolCall
from .registry import lookup

if TYPE_CHECKING:
    from .generations import Generation

__all__ = ["GenerationResult", "LeaseLost", "cancelled_done", "finish", "leave", "save"]

logger = logging.getLogger("stream_app")


class LeaseLost(Exception):
    """Raised instead of publishing once this worker may no longer own the generation."""


@dataclass
class GenerationResult:
    """What a finished generation produced, given to ``on_finish``."""

    id: str
    text: str
    tool_calls: list[ToolCall]
    done: Done | None
    error: Error | None
    cancel_reason: str | None = None

    @property
    def status(self) -> str:
        """``done``, ``cancelled`` or ``error``."""
        if self.error is not None:
            return "error"
        return "cancelled" if self.cancel_reason else "done"


def cancelled_done(generation: Generation, now: float) -> Done:
    """The ``done`` event of a cancelled generation, with its timings so far."""
    first = generation.first_token_at
    started = generation.started_at
    return Done(
        finish_reason="cancelled",
        ttft_ms=round((first - started) * 1000, 1) if first is not None else None,
        duration_ms=round((now - started) * 1000, 1),
    )


async def save(generation: Generation) -> None:
    """Run ``on_finish`` with the result (its failure is logged, never raised)."""
    if generation.on_finish is None or generation.result is None:
        return
    try:
        outcome = generation.on_finish(generation.result)
        if inspect.isawaitable(outcome):
            await outcome
    except Exception:
        logger.exception("generation %s: on_finish failed", generation.id)


async def finish(generation: Generation, event: str, payload: dict[str, Any]) -> None:
    """Publish the last event, then drop the lease; see the module docstring if it fails."""
    try:
        await generation.publish(event, payload)
    except (BackendUnavailable, LeaseLost) as exc:
        logger.warning(
            "generation %s: its %s event could not be published (%s); ending this "
            "process's streams with it, and publishing it once the backend is back",
            generation.id,
            event,
            str(exc) or "its lease expired",
        )
        channel = generation.channel
        data = json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))
        channel.fan_out(Message(channel.name, data, event, generation.filter))
        spawn(_publish_later(generation, event, payload))
        return
    if generation.leased:
        await leases.drop(generation.id)


async def _publish_later(generation: Generation, event: str, payload: dict[str, Any]) -> None:
    """Publish the last event once the backend takes it (for up to ``HISTORY_TTL``)."""
    loop = asyncio.get_running_loop()
    period = min(float(app_settings.GENERATION_HEARTBEAT), 1.0)
    deadline = loop.time() + float(app_settings.HISTORY_TTL)
    while loop.time() < deadline:
        await asyncio.sleep(period)
        try:
            # The lease first: a worker that took the generation over meanwhile runs it now
            # and publishes its own end; two ends must not be published.
            if generation.leased and not await leases.reclaim(generation.id):
                logger.info("generation %s: taken over elsewhere, which ends it", generation.id)
                return
            # A publish that timed out may have been made after all.
            info = await lookup(generation.id)
            if info is None or not info.finished:
                await generation.channel.abroadcast(payload, event, filter=generation.filter)
        except BackendUnavailable:
            continue
        logger.info("generation %s: its %s event was published late", generation.id, event)
        if generation.leased:
            try:
                await leases.drop(generation.id)
            except BackendUnavailable as exc:
                # Its keys expire with their TTLs; the history already says it finished.
                logger.warning("generation %s could not drop its lease: %s", generation.id, exc)
        return
    logger.warning("generation %s: its %s event was never published", generation.id, event)


async def leave(generation: Generation, lease_lost: bool) -> None:
    """End of a hand-over: release the lease (unless lost) so a resume takes over at once."""
    if lease_lost:
        return
    try:
        await leases.release(generation.id)
    except BackendUnavailable as exc:
        # It expires with its TTL: the takeover comes a few seconds later.
        logger.warning("generation %s could not release its lease: %s", generation.id, exc)
    logger.info("generation %s handed over", generation.id)
