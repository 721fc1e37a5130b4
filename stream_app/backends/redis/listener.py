"""The process's one pub/sub listener: redis-py ``PubSub``, a liveness watchdog, catch-up.

It subscribes to the channels this process's sessions use (plus the control channel) on one
connection and hands each event to the backend once, in id order.

**A half-open connection** (the path to Redis cut without a FIN or RST: a NAT or firewall that
forgot the flow, a frozen VM) looks connected forever: reads just wait. The listener sends a
``PING`` every ``PING_EVERY`` seconds on the subscribed connection and gives the connection up
when nothing at all (event, confirmation or PONG) has come back for ``SILENCE`` seconds, so a
half-open connection is replaced within ``SILENCE + PING_EVERY`` (4 s) plus the time a new
connection takes. TCP keepalive on the socket (see ``connection``) covers a peer that vanished
while idle. Whatever the cause, the listener then reconnects (jittered backoff, 0.05 s doubling
to 5 s), re-subscribes, and reads the streams from the last id it delivered, so nothing published
through a live Redis meanwhile is lost.

It owns its reconnects: its connections are never retried by redis-py (a retried read would
re-subscribe without the catch-up). A failure to connect is logged at once, and then every
``LOG_EVERY`` seconds while it lasts (where, without the password, and why).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio as aredis

from ...redact import redact
from ...tasks import spawn
from ..base import HISTORY_LOST, Message, id_key, in_id_order
from .scripts import crosses_hole

if TYPE_CHECKING:
    from . import RedisBackend

__all__ = ["LOG_EVERY", "PING_EVERY", "SILENCE", "Listener", "merged"]

logger = logging.getLogger("stream_app")

PING_EVERY = 1.0
SILENCE = 3.0
LOG_EVERY = 30.0
_PING = "stream_app-listener"
NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.IncompleteReadError)


class Silent(redis.ConnectionError):
    """The subscribed connection answered nothing, not even a PING, for ``SILENCE`` seconds."""


def merged(names: list[str], entries: list[Any]) -> list[Message]:
    """The XRANGE replies of the streams of ``names`` as one history in id order."""
    return in_id_order(
        [
            Message.loads(name, entry_id, fields["m"])
            for name, found in zip(names, entries, strict=True)
            for entry_id, fields in found
        ]
    )


class Listener:
    """Subscriptions, delivery and reconnects of one process (one event loop)."""

    def __init__(self, backend: RedisBackend, control: Callable[[str], None]) -> None:
        self.backend = backend
        self.control = control
        self.client: aredis.Redis = backend.target.async_client(0, backend.setup_connection)
        self.wanted: set[str] = set()
        self.connected = False
        self.reconnects = 0
        self.task: asyncio.Task[None] | None = None
        self.last_key: tuple[int, ...] | None = None
        self.last_id: str | None = None
        self._pubsub: aredis.client.PubSub | None = None
        self._sent: set[str] = set()
        self._lock = asyncio.Lock()
        # Channels whose SUBSCRIBE Redis has confirmed on the current connection.
        self._confirmed: set[str] = set()
        self._waiters: dict[str, list[asyncio.Future[None]]] = {}
        self._started_ms = time.time_ns() // 1_000_000
        self._closed = False
        self._reported: set[str] = set()

    # -- subscriptions -------------------------------------------------------------------------

    def want(self, channel: str) -> None:
        """Receive ``channel`` (starting the listener if needed)."""
        self.wanted.add(channel)
        if self.task is None or self.task.done():
            self.task = asyncio.ensure_future(self._run())
        else:
            self._sync()

    def drop(self, channel: str) -> None:
        """Stop receiving ``channel``."""
        self.wanted.discard(channel)
        self._confirmed.discard(channel)
        self._sync()

    async def ready(self, channel: str, timeout: float) -> bool:
        """Wait for Redis to confirm the subscription to ``channel`` (False on timeout)."""
        if channel in self._confirmed:
            return True
        future = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(channel, []).append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True

    def _keys(self) -> set[str]:
        return {self.backend.control_key, *(self.backend.live_key(c) for c in self.wanted)}

    def _sync(self) -> None:
        if self._pubsub is not None:
            # Tasks take the lock in the order they were made, and each sends the difference
            # between what is wanted then and what was sent: changes reach Redis in order.
            spawn(self._send(self._pubsub))

    async def _send(self, pubsub: aredis.client.PubSub) -> None:
        async with self._lock:
            if pubsub is not self._pubsub:
                return
            keys = self._keys()
            added, removed = keys - self._sent, self._sent - keys
            self._sent = keys
            # A failed send is the listener's to notice (its next read fails or falls silent).
            with contextlib.suppress(*NETWORK_ERRORS):
                if added:
                    await pubsub.subscribe(*added)
                if removed:
                    await pubsub.unsubscribe(*removed)

    def _confirm(self, name: str) -> None:
        prefix = self.backend.live_key("")
        if not name.startswith(prefix):
            return
        channel = name[len(prefix) :]
        self._confirmed.add(channel)
        for future in self._waiters.pop(channel, ()):
            if not future.done():
                future.set_result(None)

    # -- the loop ------------------------------------------------------------------------------

    async def _run(self) -> None:
        delay = 0.05
        failures = 0
        logged = -LOG_EVERY
        loop = asyncio.get_running_loop()
        while not self._closed:
            pubsub = self.client.pubsub()
            try:
                await self._connect(pubsub, failures > 0)
                if failures:
                    logger.info("stream_app listener connected to Redis after %d tries", failures)
                elif not self.connected:
                    logger.info("stream_app listener connected to Redis")
                self.connected = True
                delay, failures = 0.05, 0
                await self._read(pubsub)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # Anything else (a reply it cannot parse, a bug) must not end the listener in
                # silence either: it is logged (without credentials) and the listener restarts.
                where, why = self.backend.target.describe(), redact(f"{type(exc).__name__}: {exc}")
                if self.connected or loop.time() - logged >= LOG_EVERY:
                    logged = loop.time()
                    if not isinstance(exc, (*NETWORK_ERRORS, redis.RedisError)):
                        logger.error(
                            "stream_app listener failed at %s (%s); restarting (attempt %d)",
                            where,
                            why,
                            failures + 1,
                        )
                    elif self.connected:
                        logger.warning("stream_app lost Redis at %s (%s); reconnecting", where, why)
                    else:
                        logger.warning(
                            "stream_app cannot reach Redis at %s (%s); retrying (attempt %d)",
                            where,
                            why,
                            failures + 1,
                        )
                self.connected = False
                self.reconnects += 1
                failures += 1
            finally:
                self._pubsub = None
                self._sent = set()
                self._confirmed.clear()
                await self._discard(pubsub)
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    async def _discard(self, pubsub: aredis.client.PubSub) -> None:
        # Close without waiting for the peer (a half-open one never answers), and drop every
        # pooled connection of the listener: they went the same way.
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pubsub.aclose(), 1.0)  # type: ignore[no-untyped-call]
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.client.connection_pool.disconnect(), 1.0)

    async def _connect(self, pubsub: aredis.client.PubSub, failed: bool) -> None:
        if self.last_key is None:
            # Where delivery starts, so that catch-up after a reconnect has a floor even if
            # nothing was delivered yet: Redis' clock now, or, if Redis was unreachable when
            # the first session subscribed, the local clock back then (less a second for
            # skew: better an old event than a lost one).
            if failed:
                floor = self._started_ms - 1000
            else:
                seconds, micros = await self.client.time()
                floor = seconds * 1000 + micros // 1000
            self.last_key, self.last_id = (floor, -1), f"{floor}-0"
        async with self._lock:
            keys = self._keys()
            await pubsub.subscribe(*keys)
            self._sent = keys
            self._pubsub = pubsub
        if self.wanted and self.last_key is not None:
            holes = {str(h) for h in await self.client.lrange(self.backend.holes_key, 0, -1)}
            # Each hole once: a second reconnect before anything new was delivered is no news.
            if crosses_hole(list(holes - self._reported), self.last_key):
                self._lost()
            self._reported |= holes
        await self._catch_up()

    def _lost(self) -> None:
        """Redis changed server and the new one lacks events after the last one delivered
        here (``scripts``): tell every session, which cannot get them back, with one ``reset``
        (``HISTORY_LOST``)."""
        logger.warning(
            "stream_app: Redis changed server; events after %s may be lost", self.last_id
        )
        body = json.dumps({"reason": "history_lost", "last_event_id": self.last_id})
        self.backend.deliver(Message("", body, HISTORY_LOST))

    async def _read(self, pubsub: aredis.client.PubSub) -> None:
        loop = asyncio.get_running_loop()
        heard = pinged = loop.time()
        await pubsub.ping(_PING)
        while True:
            message = await pubsub.get_message(timeout=PING_EVERY)
            now = loop.time()
            if message is not None:
                heard = now
                self._handle(message)
            if now - heard > SILENCE:
                raise Silent(f"no answer on the subscribed connection for {SILENCE:g} s")
            if now - pinged >= PING_EVERY:
                pinged = now
                await pubsub.ping(_PING)

    def _handle(self, message: dict[str, Any]) -> None:
        kind, name = message["type"], message["channel"]
        if kind == "subscribe":
            self._confirm(name)
        elif kind == "message":
            if name == self.backend.control_key:
                self.control(message["data"])
            else:
                self._received(name[len(self.backend.live_key("")) :], message["data"])

    def _received(self, channel: str, payload: str) -> None:
        text_id, _, body = payload.partition(" ")
        key = id_key(text_id)
        if key is None or (self.last_key is not None and key <= self.last_key):
            return
        try:
            message = Message.loads(channel, text_id, body)
        except (ValueError, KeyError, TypeError):
            logger.warning("dropped a malformed message on channel %r", channel)
            return
        self.last_key, self.last_id = key, text_id
        self.backend.deliver(message)

    async def _catch_up(self) -> None:
        """Deliver what was published on our channels while the listener was away.

        Reads from the last delivered id inclusive (the floor set at first connect is not an
        entry id) and skips what was already delivered.
        """
        names = list(self.wanted)
        if not names or self.last_id is None:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xrange(self.backend.stream_key(name), self.last_id, "+")
            results = await pipe.execute()
        for message in merged(names, results):
            key = id_key(message.id)
            if key is not None and (self.last_key is None or key > self.last_key):
                self.last_key, self.last_id = key, message.id
                self.backend.deliver(message)

    async def aclose(self) -> None:
        """Stop listening and close the listener's connections."""
        self._closed = True
        if self.task is not None:
            # A cancellation can be swallowed inside redis-py's connect (its timeouts turn a
            # cancel that meets an expiry into an error): cancel until the task has ended.
            while not self.task.done():
                self.task.cancel()
                await asyncio.wait({self.task}, timeout=0.5)
            with contextlib.suppress(asyncio.CancelledError, Exception):
                self.task.result()
            self.task = None
        self.connected = False
        with contextlib.suppress(Exception):
            await self.client.aclose()
