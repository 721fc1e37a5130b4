"""Generations: an LLM run as a producer task that publishes to its own channel.

A generation is decoupled from any one connection. Its producer reads the upstream stream
(coalesced, ``GENERATION_COALESCE_MS`` / ``_CHARS``) and publishes every event to the channel
``generation:<id>`` through the backend, so the history that makes ``Last-Event-ID`` resumption
work is the backend's own: any worker can replay it and follow the live tail, and several tabs
can watch one answer.

The events are those of ``stream_app.llm.events``, framed by a first ``generation`` event
(``{"id", "stream_url", "cancel_url", "model", ...}``) and a last ``done`` or ``error``, which
is never lost and comes after ``on_finish`` has saved the answer (``stream_app.llm.ending``).

Ownership: every event carries the filter ``{"owner": <digest>}``, an HMAC of the owner
(``user:<pk>``, or ``session:<key>`` for anonymous users), and watching sessions hold their
own digest in their state. Any worker can so tell who owns a generation from its history, and
a session of someone else would receive nothing even if it joined the channel.

A generation that stopped without an end because its lease may be another worker's now is
followed here like one running elsewhere (``takeover.follow``), so its local listeners see it
continued, or told it is lost.

Stopping: ``cancel()`` here, or a ``cancel`` event published by another worker (pushed to the
producer, ``stream_app.llm.watch``), or no listener on any worker for ``GENERATION_GRACE``
seconds (the backend's presence). Each closes the upstream request and ends with ``done``
(finish reason ``cancelled``).

Takeover (shared backends): a generation started on ``stream_chat(...)`` stores how to rerun
it and keeps a heartbeat (``stream_app.llm.leases``). If its worker dies, the next worker to
resume it continues it (``stream_app.llm.takeover``): the text already published is sent to
the model as a trailing assistant message and the new producer keeps publishing on the same
channel, so ``done`` and ``on_finish`` carry the whole text. A graceful shutdown hands running
generations over instead of cancelling them (``shutdown_generations``). On the memory backend
(one process) there is nothing to take over: a shutdown cancels them (reason ``shutdown``).
Generations started on any other source cannot be rerun: if their worker dies they stay
unfinished, reported orphaned, and their history expires with the backend's ``HISTORY_TTL``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from ..backends.base import BackendUnavailable
from ..channels import Channel, get_channel
from ..conf import app_settings
from ..lifecycle import on_shutdown, spawn
from ..metrics import observe_generation
from . import leases
from .coalesce import aclose_iterator, coalesce
from .ending import GenerationResult, LeaseLost, cancelled_done, finish, leave, save
from .errors import error_event, internal_error
from .events import Done, Error, LLMEvent, RawChunk, Token, ToolCall
from .registry import (
    GenerationInfo,
    channel_name,
    get_local,
    local_generations,
    lookup,
    owner_digest,
    wait_for_listener,
)
from .takeover import follow, on_rerun
from .watch import watch

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
    #: How to rerun it elsewhere (``stream_chat``'s request), None if it cannot be.
    request: dict[str, Any] | None = field(default=None, init=False, repr=False)
    #: The text published before this producer took over (a continuation), else "".
    prefix: str = field(default="", init=False, repr=False)
    #: Whether this worker holds the generation's lease (heartbeat) on a shared backend.
    leased: bool = field(default=False, init=False, repr=False)
    #: Loop time until which the lease is surely ours (refreshed by ``leases.keep``).
    lease_until: float = field(default=float("inf"), init=False, repr=False)
    handed_over: bool = field(default=False, init=False, repr=False)
    #: Loop times of the producer's start and of its first token.
    started_at: float = field(default=0.0, init=False, repr=False)
    first_token_at: float | None = field(default=None, init=False, repr=False)
    _lease_lost: bool = field(default=False, init=False, repr=False)
    _reading: bool = field(default=False, init=False, repr=False)

    @property
    def channel(self) -> Channel:
        """The channel the generation publishes to."""
        return get_channel(channel_name(self.id))

    @property
    def filter(self) -> dict[str, str]:
        """The filter every event carries: only the owner's sessions receive it."""
        return {"owner": self.owner}

    def start(
        self,
        source: AsyncIterator[LLMEvent | RawChunk],
        *,
        prefix: str = "",
        first_id: str | None = None,
    ) -> None:
        """Start the producer on ``source`` (from ``stream_chat``); returns at once.

        ``prefix`` and ``first_id`` are for a takeover: the text and the first event already
        published by the worker that died (the producer then holds the lease already).
        """
        if self.task is not None:
            raise RuntimeError(f"generation {self.id} was already started")
        if self.request is None:
            self.request = getattr(source, "request", None)
        if first_id is not None:
            self.prefix, self.first_id, self.leased = prefix, first_id, True
            self.lease_until = asyncio.get_running_loop().time() + float(
                app_settings.GENERATION_HEARTBEAT_TTL
            )
        local_generations[self.id] = self
        self.task = asyncio.ensure_future(self._run(source))

    def hand_over(self) -> bool:
        """Stop here without an end, releasing the lease so another worker continues at once.

        For a graceful shutdown: the upstream call is closed, nothing final is published and
        ``on_finish`` does not run. False if it is not leased or has already finished.
        """
        if not self.leased or self.task is None or self.task.done() or self.result is not None:
            return False
        if not self.handed_over and self.cancel_reason is None:
            self.handed_over = True
            if self._reading:
                self.task.cancel()
        return True

    def lose_lease(self) -> None:
        """Another worker holds the lease now (this one stalled past the TTL): stop silently."""
        self._lease_lost = True
        self.hand_over()

    @property
    def _stopping(self) -> bool:
        return self.cancel_reason is not None or self.handed_over

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

    async def publish(self, event: str, payload: Any) -> str:
        """Publish one event of this generation (``LeaseLost`` once it may be another's)."""
        if self.leased and asyncio.get_running_loop().time() >= self.lease_until:
            # The heartbeat could not be refreshed in time: another worker may own the
            # generation now, and two producers must not interleave on one channel.
            self.lose_lease()
            raise LeaseLost
        return await self.channel.abroadcast(payload, event, filter=self.filter)

    def _record(self) -> dict[str, Any]:
        """What another worker needs to rerun this generation (see ``stream_app.llm.leases``)."""
        return {
            "request": self.request,
            "on_finish": leases.dotted_path(self.on_finish),
            "metadata": self.metadata,
            "grace": self.grace,
            "coalesce_ms": self.coalesce_ms,
            "coalesce_chars": self.coalesce_chars,
        }

    async def _run(self, source: AsyncIterator[LLMEvent | RawChunk]) -> None:
        try:
            await self._produce(source)
        finally:
            local_generations.pop(self.id, None)
        if self._lease_lost and self.result is None:
            # Stopped without an end: another worker may run it now, or nobody (the backend
            # was away from every worker). Watch it as one running elsewhere, so that this
            # process's listeners see it continued (here, if need be) or are told it is lost.
            follow(self.id)

    async def _produce(self, source: AsyncIterator[LLMEvent | RawChunk]) -> None:
        loop = asyncio.get_running_loop()
        self.started_at = loop.time()
        parts: list[str] = [self.prefix]
        calls: dict[int, ToolCall] = {}
        terminal: Done | Error | None = None
        watcher: asyncio.Future[Any] | None = None
        beat: asyncio.Future[Any] | None = None
        events = coalesce(source, interval_ms=self.coalesce_ms, max_chars=self.coalesce_chars)
        try:
            if self.first_id is None:
                if self.request is not None:
                    # Before the first event: whoever sees the generation sees its heartbeat.
                    self.leased = await leases.register(self.id, self._record())
                self.first_id = await self.publish("generation", {"id": self.id, **self.metadata})
            watcher = spawn(watch(self))
            if self.leased:
                beat = spawn(leases.keep(self))
            try:
                while not self._stopping:
                    self._reading = True
                    try:
                        event = await anext(events)
                    except StopAsyncIteration:
                        break
                    except asyncio.CancelledError:
                        if not self._stopping:
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
                        if self.first_token_at is None:
                            self.first_token_at = loop.time()
                        parts.append(event.text)
                    elif isinstance(event, ToolCall) and event.complete:
                        calls[event.index] = event
                    await self.publish(event.event, event.payload())
            finally:
                await aclose_iterator(events)
        except LeaseLost:
            pass
        except BackendUnavailable as exc:
            logger.warning("generation %s cannot publish: %s", self.id, exc)
            terminal = error_event("internal_error", str(exc))
        except Exception as exc:
            terminal = internal_error(exc)
        finally:
            for task in (watcher, beat):
                if task is not None:
                    task.cancel()
        if self.handed_over:
            await leave(self, self._lease_lost)
            return
        if self.cancel_reason is not None and not isinstance(terminal, Error):
            terminal = cancelled_done(self, loop.time())
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
            await save(self)
            payload = terminal.payload()
            if self.cancel_reason is not None:
                payload["cancel_reason"] = self.cancel_reason
            if isinstance(terminal, Done):
                # The whole answer, also when it was continued by another worker.
                payload["text"] = self.result.text
            await finish(self, terminal.event, payload)
        except Exception:
            logger.exception("generation %s could not publish its end", self.id)
        first = self.first_token_at
        observe_generation(
            first - self.started_at if first is not None else None,
            terminal.tokens_per_second if isinstance(terminal, Done) else None,
        )


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
    """Hand this process's generations over to other workers, or cancel them; returns how many.

    Meant for a graceful shutdown, before the event loop stops. A generation with a lease
    (shared backend, rerunnable source) stops its upstream call, publishes nothing final and
    releases its heartbeat, so the next resume on another worker continues it at once. Any
    other (memory backend: one process) is cancelled (reason ``shutdown``): it ends with
    ``done`` (``cancelled``) and its ``on_finish`` runs, instead of staying unfinished.
    """
    generations = list(local_generations.values())
    running = [g for g in generations if g.hand_over() or g.cancel("shutdown")]
    tasks = [g.task for g in running if g.task is not None]
    if tasks:
        await asyncio.wait(tasks, timeout=timeout)
    return len(running)


def rerun(
    info: GenerationInfo,
    source: AsyncIterator[LLMEvent | RawChunk],
    prefix: str,
    on_finish: Callable[..., Any] | None,
) -> Generation:
    """Start a taken-over generation again on ``source``, after the ``prefix`` it had published.

    Its settings come from its lease record (``takeover.take_over`` calls it).
    """
    record = info.record or {}
    generation = Generation(
        owner=info.owner,
        id=info.id,
        on_finish=on_finish,
        metadata=dict(record.get("metadata") or {}),
        grace=float(record.get("grace") or app_settings.GENERATION_GRACE),
        coalesce_ms=float(record.get("coalesce_ms") or 0),
        coalesce_chars=int(record.get("coalesce_chars") or 0),
    )
    generation.request = record.get("request") or {}
    generation.start(source, prefix=prefix, first_id=info.first_id)
    return generation


# A graceful shutdown hands running generations over before their streams are closed.
on_shutdown(shutdown_generations)
# Taken-over generations start here (takeover cannot import this module).
on_rerun(rerun)
