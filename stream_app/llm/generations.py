"""Generations: an LLM run as a producer task that publishes to its own channel.

A generation is decoupled from any one connection. Its producer reads the upstream stream
(coalesced, ``GENERATION_COALESCE_MS`` / ``_CHARS``) and publishes every event to the channel
``generation:<id>`` through the backend, so the history that makes ``Last-Event-ID`` resumption
work is the backend's own: any worker can replay it and follow the live tail, and several tabs
can watch one answer.

The events are those of ``stream_app.llm.events``, framed by a first ``generation`` event
(``{"id", "stream_url", "cancel_url", "model", ...}``) and a last ``done`` or ``error``. The
answer is saved (``on_finish``) *before* the last event is published, so a client that reloads
after ``done`` finds it saved.

Ownership: every event carries the filter ``{"owner": <digest>}``, an HMAC of the owner
(``user:<pk>``, or ``session:<key>`` for anonymous users), and watching sessions hold their
own digest in their state. Any worker can so tell who owns a generation from its history, and
a session of someone else would receive nothing even if it joined the channel.

Stopping: ``cancel()`` here, or a ``cancel`` event published by another worker (the producer
polls its channel's history for it), or no listener on any worker for ``GENERATION_GRACE``
seconds. Each closes the upstream request and ends with ``done`` (finish reason
``cancelled``). A worker that dies mid-run leaves the generation unfinished: its history
expires with the backend's ``HISTORY_TTL``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..backends import get_backend
from ..backends.base import BackendUnavailable, Message
from ..channels import Channel, get_channel
from ..conf import app_settings
from ..lifecycle import spawn
from .coalesce import aclose_iterator, coalesce
from .errors import error_event, internal_error
from .events import Done, Error, LLMEvent, RawChunk, Token, ToolCall
from .registry import (
    GenerationInfo,
    _local,
    channel_name,
    get_local,
    lookup,
    owner_digest,
    wait_for_listener,
)

__all__ = [
    "Generation",
    "GenerationInfo",
    "GenerationResult",
    "channel_name",
    "create_generation",
    "get_local",
    "lookup",
    "owner_digest",
    "shutdown_generations",
    "wait_for_listener",
]

logger = logging.getLogger("stream_app")

# How often the producer looks for a cancel published by another worker (shared backends).
CANCEL_POLL = 0.25


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


@dataclass
class Generation:
    """One LLM run. Build it with ``create_generation``, run it with ``start``."""

    owner: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    on_finish: Callable[[GenerationResult], Awaitable[object] | object] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    grace: float = 30.0
    coalesce_ms: float = 50
    coalesce_chars: int = 400
    # Run state, set by the producer (not constructor arguments).
    cancel_reason: str | None = field(default=None, init=False)
    first_id: str | None = field(default=None, init=False)
    result: GenerationResult | None = field(default=None, init=False)
    task: asyncio.Task[None] | None = field(default=None, init=False, repr=False)
    _reading: bool = field(default=False, init=False, repr=False)
    _started_at: float = field(default=0.0, init=False, repr=False)
    _first_token_at: float | None = field(default=None, init=False, repr=False)

    @property
    def channel(self) -> Channel:
        """The channel the generation publishes to."""
        return get_channel(channel_name(self.id))

    @property
    def filter(self) -> dict[str, str]:
        """The filter every event carries: only the owner's sessions receive it."""
        return {"owner": self.owner}

    def start(self, source: AsyncIterator[LLMEvent | RawChunk]) -> None:
        """Start the producer on ``source`` (from ``stream_chat``); returns at once."""
        if self.task is not None:
            raise RuntimeError(f"generation {self.id} was already started")
        _local[self.id] = self
        self.task = asyncio.ensure_future(self._run(source))

    def cancel(self, reason: str = "user") -> bool:
        """Stop the upstream call; the generation ends with ``done`` (``cancelled``).

        Returns False if it had already finished. The read from upstream is interrupted at once;
        a publish in progress completes first, so no event is half-sent.
        """
        if self.task is None or self.task.done() or self.result is not None:
            return False
        if self.cancel_reason is None:
            self.cancel_reason = reason
            if self._reading:
                self.task.cancel()
        return True

    async def wait(self) -> GenerationResult | None:
        """Wait for the producer to finish; returns the result."""
        if self.task is not None:
            await asyncio.shield(self.task)
        return self.result

    async def _publish(self, event: str, payload: Any) -> str:
        return await self.channel.abroadcast(payload, event, filter=self.filter)

    async def _run(self, source: AsyncIterator[LLMEvent | RawChunk]) -> None:
        try:
            await self._produce(source)
        finally:
            _local.pop(self.id, None)

    async def _produce(self, source: AsyncIterator[LLMEvent | RawChunk]) -> None:
        loop = asyncio.get_running_loop()
        self._started_at = loop.time()
        parts: list[str] = []
        calls: dict[int, ToolCall] = {}
        terminal: Done | Error | None = None
        watcher: asyncio.Future[Any] | None = None
        events = coalesce(source, interval_ms=self.coalesce_ms, max_chars=self.coalesce_chars)
        try:
            self.first_id = await self._publish("generation", {"id": self.id, **self.metadata})
            watcher = spawn(self._watch())
            try:
                while self.cancel_reason is None:
                    self._reading = True
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        break
                    except asyncio.CancelledError:
                        if self.cancel_reason is None:
                            raise
                        break
                    finally:
                        self._reading = False
                    if isinstance(event, RawChunk):
                        continue
                    if isinstance(event, Done | Error):
                        terminal = event
                        break
                    if isinstance(event, Token):
                        if self._first_token_at is None:
                            self._first_token_at = loop.time()
                        parts.append(event.text)
                    elif isinstance(event, ToolCall) and event.complete:
                        calls[event.index] = event
                    await self._publish(event.event, event.payload())
            finally:
                await aclose_iterator(events)
        except BackendUnavailable as exc:
            logger.warning("generation %s cannot publish: %s", self.id, exc)
            terminal = error_event("internal_error", str(exc))
        except Exception as exc:
            terminal = internal_error(exc)
        finally:
            if watcher is not None:
                watcher.cancel()
        if self.cancel_reason is not None and not isinstance(terminal, Error):
            terminal = self._cancelled_done(loop.time())
        elif terminal is None:
            # The source ended without saying how: treat as a cut upstream.
            terminal = error_event("upstream_unavailable", "the stream ended early")
        self.result = GenerationResult(
            self.id,
            "".join(parts),
            [calls[i] for i in sorted(calls)],
            terminal if isinstance(terminal, Done) else None,
            terminal if isinstance(terminal, Error) else None,
            self.cancel_reason,
        )
        try:
            await self._save()
            payload = terminal.payload()
            if self.cancel_reason is not None:
                payload["cancel_reason"] = self.cancel_reason
            await self._publish(terminal.event, payload)
        except Exception:
            logger.exception("generation %s could not publish its end", self.id)

    def _cancelled_done(self, now: float) -> Done:
        first = self._first_token_at
        return Done(
            finish_reason="cancelled",
            ttft_ms=round((first - self._started_at) * 1000, 1) if first is not None else None,
            duration_ms=round((now - self._started_at) * 1000, 1),
        )

    async def _save(self) -> None:
        if self.on_finish is None or self.result is None:
            return
        try:
            outcome = self.on_finish(self.result)
            if inspect.isawaitable(outcome):
                await outcome
        except Exception:
            logger.exception("generation %s: on_finish failed", self.id)

    async def _watch(self) -> None:
        """Cancel on a cancel event from another worker or a long absence of listeners."""
        backend = get_backend()
        poll = not backend.local_only
        count_every = min(1.0, max(0.05, self.grace / 4))
        tick = min(CANCEL_POLL, count_every) if poll else count_every
        loop = asyncio.get_running_loop()
        seen = self.first_id or "0-0"
        quiet_since: float | None = None
        next_count = loop.time()
        while self.result is None:
            await asyncio.sleep(tick)
            try:
                if poll:
                    history = await backend.history([channel_name(self.id)], seen)
                    for message in history.messages:
                        seen = message.id
                        if message.event == "cancel":
                            self.cancel(_cancel_reason(message))
                            return
                now = loop.time()
                if now < next_count:
                    continue
                next_count = now + count_every
                if await self.channel.acount() > 0:
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = now
                elif now - quiet_since >= self.grace:
                    logger.info("generation %s: no listener for %.0fs", self.id, self.grace)
                    self.cancel("no_listener")
                    return
            except BackendUnavailable as exc:
                logger.warning("generation %s watcher: %s", self.id, exc)


def _cancel_reason(message: Message) -> str:
    import json

    try:
        reason = json.loads(message.data).get("reason")
    except (ValueError, AttributeError):
        reason = None
    return reason if isinstance(reason, str) and len(reason) < 40 else "user"


def create_generation(
    owner: str,
    *,
    on_finish: Callable[[GenerationResult], Awaitable[object] | object] | None = None,
    metadata: dict[str, Any] | None = None,
    grace: float | None = None,
    coalesce_ms: float | None = None,
    coalesce_chars: int | None = None,
) -> Generation:
    """A new generation owned by ``owner`` (a digest, see ``owner_digest``), not yet started.

    ``metadata`` goes into the first ``generation`` event. The other options default to the
    ``GENERATION_*`` settings.
    """
    return Generation(
        owner=owner,
        on_finish=on_finish,
        metadata=dict(metadata or {}),
        grace=float(app_settings.GENERATION_GRACE if grace is None else grace),
        coalesce_ms=app_settings.GENERATION_COALESCE_MS if coalesce_ms is None else coalesce_ms,
        coalesce_chars=(
            app_settings.GENERATION_COALESCE_CHARS if coalesce_chars is None else coalesce_chars
        ),
    )


async def shutdown_generations(timeout: float = 5.0) -> int:
    """Cancel this process's generations (reason ``shutdown``) and let them save and end.

    Meant for a graceful shutdown, before the event loop stops: each generation then ends with
    ``done`` (``cancelled``) and its ``on_finish`` runs, instead of staying unfinished.
    Returns how many were running.
    """
    running = [g for g in list(_local.values()) if g.cancel("shutdown")]
    tasks = [g.task for g in running if g.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    return len(running)
