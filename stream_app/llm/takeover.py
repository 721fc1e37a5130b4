"""Taking over a generation whose worker died: the answer continues on this worker.

When a worker sees an unfinished generation whose heartbeat has expired (``lookup`` says
``orphaned`` and it has a lease record), ``take_over`` claims it (``SET NX``, so exactly one
worker wins even when several clients resume it on several workers at once), re-reads its
history (it may have finished meanwhile), and starts a new producer on the same channel:

- the source is the recorded request (messages, model, params) plus the text already published
  as a trailing ``assistant`` message, so the model continues the answer from there;
- events keep the channel's ids (monotonic, from the backend), so a client's ``Last-Event-ID``
  replay plus the live tail give the whole text exactly once;
- ``done`` and ``on_finish`` (found again by its dotted path) carry the whole text.

Limits, deliberately: with a real model the continuation is the model continuing from a
partial answer in a trailing assistant message. Good models do that seamlessly, and
providers that support assistant prefill (Anthropic, DeepSeek, vLLM / llama.cpp servers)
honour it exactly; others may restate a few words. Tool calls in flight are not resumed (only
text is carried over), and what the dead worker had read from upstream but not yet published
(at most one coalescing interval) is generated again, not recovered.

Who notices: a resume request (the stream view), a cancel, the chat's page load, and
``follow``: while this worker has a session watching a generation that runs elsewhere it checks
the heartbeat every ``GENERATION_HEARTBEAT`` seconds (one ``EXISTS``), so watchers that never
reconnect see it continue too. When nothing can finish it any more (its worker is gone and it
cannot be rerun, or its history is gone for longer than its worker would take to publish a
late end) the watching sessions here get an ``error`` event with code ``generation_lost`` and
their streams end: a stream never waits forever for an end that cannot come.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder
from django.utils.module_loading import import_string

from ..backends import get_backend
from ..backends.base import BackendUnavailable, Message
from ..channels import Channel, get_channel
from ..conf import app_settings
from ..lifecycle import is_shutting_down, spawn
from . import leases
from .errors import error_event
from .registry import GenerationInfo, channel_name, get_local, lookup

__all__ = ["Rerun", "follow", "on_rerun", "prefix_of", "take_over"]

logger = logging.getLogger("stream_app")
_followed: dict[str, asyncio.Future[Any]] = {}


def prefix_of(info: GenerationInfo) -> str:
    """The answer text already published (its ``token`` events, in order)."""
    parts: list[str] = []
    for message in info.messages:
        if message.event == "token":
            try:
                text = json.loads(message.data).get("text")
            except (ValueError, AttributeError):
                text = None
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


async def take_over(info: GenerationInfo) -> GenerationInfo | None:
    """Continue an orphaned generation here; returns its fresh info, None if impossible.

    The fresh info is not orphaned when this worker (or another, just before) took it over,
    and finished if it had ended after all.
    """
    if not info.orphaned or info.record is None or is_shutting_down():
        return None
    if get_local(info.id) is None and await leases.claim(info.id):
        try:
            return await _start(info.id)
        except BaseException:
            await leases.release(info.id)
            raise
    # Another worker claimed it first (or it runs here already): it is alive again.
    return await lookup(info.id)


#: Starts a producer again: ``(info, source, prefix, on_finish)``. Registered by
#: ``stream_app.llm.generations`` (which imports this module) through ``on_rerun``.
Rerun = Callable[[GenerationInfo, AsyncIterator[Any], str, Callable[..., Any] | None], object]
_rerun: dict[str, Rerun] = {}


def on_rerun(callback: Rerun) -> None:
    """Set how ``take_over`` starts a generation again, so this module never imports it."""
    _rerun["start"] = callback


async def _start(generation_id: str) -> GenerationInfo | None:
    from .openai import stream_chat

    # Read again under the lease: the old producer may have finished just before it let go.
    info = await lookup(generation_id)
    rerun = _rerun.get("start")
    if info is None or info.finished or info.record is None or rerun is None:
        await leases.release(generation_id)
        return info
    record = info.record
    request = record.get("request") or {}
    prefix = prefix_of(info)
    messages = list(request.get("messages") or [])
    if prefix:
        messages.append({"role": "assistant", "content": prefix})
    on_finish = None
    if record.get("on_finish"):
        try:
            on_finish = import_string(record["on_finish"])
        except ImportError:
            logger.warning(
                "generation %s: on_finish %s is gone", generation_id, record["on_finish"]
            )
    source = stream_chat(messages, model=request.get("model"), **(request.get("params") or {}))
    rerun(info, source, prefix, on_finish)
    await leases.update_record(generation_id, record)
    logger.info("generation %s taken over after %d characters", generation_id, len(prefix))
    info.orphaned = False
    return info


def follow(generation_id: str) -> None:
    """Watch the heartbeat of a generation that runs elsewhere while sessions here follow it."""
    if generation_id in _followed or get_local(generation_id) is not None:
        return
    if get_backend().local_only:
        # One process runs every producer: there is no heartbeat to watch.
        return
    _followed[generation_id] = spawn(_follow(generation_id))


async def _follow(generation_id: str) -> None:
    channel = get_channel(channel_name(generation_id))
    period = float(app_settings.GENERATION_HEARTBEAT)
    # How long the history may be missing (a Redis restart lost it) before the generation is
    # lost: its worker, if alive, publishes a refused end again every period at most.
    patience = 2 * float(app_settings.GENERATION_HEARTBEAT_TTL) + period
    loop = asyncio.get_running_loop()
    missing_since: float | None = None
    unavailable = False
    try:
        while channel.session_count > 0 and get_local(generation_id) is None:
            await asyncio.sleep(period)
            try:
                if await leases.alive(generation_id):
                    missing_since = None
                    continue
                info = await lookup(generation_id)
                if info is None:
                    now = loop.time()
                    missing_since = now if missing_since is None else missing_since
                    if now - missing_since >= patience:
                        _lost(channel, None)
                        return
                    continue
                missing_since = None
                if info.finished:
                    return
                if info.orphaned and info.record is None:
                    _lost(channel, info.owner)
                    return
                await take_over(info)
            except BackendUnavailable as exc:
                # Once per outage, not once per period.
                if not unavailable:
                    logger.warning("generation %s follower: %s", generation_id, exc)
                unavailable = True
            else:
                unavailable = False
    finally:
        _followed.pop(generation_id, None)


def _lost(channel: Channel, owner: str | None) -> None:
    """End this process's streams of a generation that nothing can finish any more."""
    logger.warning("%s: lost (its worker stopped and nothing can finish it)", channel.name)
    payload = error_event("generation_lost").payload()
    data = json.dumps(payload, cls=DjangoJSONEncoder, separators=(",", ":"))
    spec = {"owner": owner} if owner is not None else None
    channel.fan_out(Message(channel.name, data, "error", spec))
