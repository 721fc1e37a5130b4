"""The Redis backend: Redis Streams for ids and history, pub/sub to wake one listener per process.

Publishing runs one Lua script, atomically:

1. take the next id from one counter shared by every channel (``<ms>-<seq>`` from Redis' own
   clock, never smaller than the last one), so ids are ordered across channels and a single
   ``Last-Event-ID`` can replay several channels;
2. ``XADD`` the event under that id to the channel's stream, ``MAXLEN ~ HISTORY_SIZE``, and
   refresh the stream's TTL (``XADD`` does not);
3. ``PUBLISH`` ``<id> <payload>`` on the channel's pub/sub channel.

Each process runs ONE listener (``listener``: redis-py ``PubSub`` with a liveness watchdog)
subscribed to the channels its sessions use, plus a control channel for cross-worker counts.
Commands (publish, history, counts) go through redis-py's asyncio client; ``connection`` builds
both from the settings (URL, TLS, Sentinel, pool). ``redis`` is imported only in this package.

Leases (which worker runs a generation, and how to rerun it) and presence (which workers have
sessions on a channel) are commands of ``leases.RedisLeases``, which this class extends.

Keys (all with a TTL):

- ``{prefix}:s:{channel}`` stream, ``{prefix}:last`` last id, ``{prefix}:epoch`` when the
  current id sequence began, ``{prefix}:primary`` the server that holds the history and
  ``{prefix}:holes`` what a change of server may have lost (``scripts``);
- ``{prefix}:reply:{uuid}`` replies to a cross-worker count (``count``);
- ``{prefix}:lease:{<name>}:run`` a lease's record and ``{prefix}:lease:{<name>}:beat`` its
  heartbeat (TTL ``HISTORY_TTL`` and the runner's TTL);
- ``{prefix}:w:{<channel>}`` the workers present on a channel (a sorted set; a dead worker
  drops out within ``leases.PRESENCE_TTL`` seconds).

Cluster: the lease and presence keys carry the name in a hash tag (``{...}``), so that one
lease's keys and its channel's presence share a slot. The publish script still spans several
keys (one id counter for every channel), which Redis Cluster would refuse: running on a
cluster needs a counter per slot and ids merged across them, not done here.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import uuid
from collections.abc import Iterable
from typing import Any

from ...extras import MissingExtra

try:
    import redis
    import redis.asyncio as aredis
except ImportError as exc:
    raise MissingExtra("redis", "The Redis backend") from exc

from ...conf import app_settings
from ...redact import redact
from ...tasks import spawn
from ..base import BackendUnavailable, History, Message, id_key
from .connection import target
from .leases import RedisLeases
from .listener import NETWORK_ERRORS, Listener, merged
from .scripts import PUBLISH_SCRIPT, TAKEOVER_SCRIPT, crosses_hole, trimmed_after

__all__ = ["RedisBackend"]

logger = logging.getLogger("stream_app")


class RedisBackend(RedisLeases):
    """Production backend for several workers sharing one Redis (or a Sentinel service)."""

    def __init__(self) -> None:
        super().__init__()
        self.url: str = app_settings.REDIS_URL
        self.prefix: str = app_settings.KEY_PREFIX
        self.target = target()
        self._wanted: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aredis.Redis | None = None
        self._listener: Listener | None = None
        self._sync_client: redis.Redis | None = None
        self._sync_lock = threading.Lock()
        self._reconnects_before = 0

    @property
    def connected(self) -> bool:
        """Whether the listener is subscribed now (False before the first subscription)."""
        return self._listener is not None and self._listener.connected

    @property
    def reconnects(self) -> int:
        """How often the listener lost Redis or failed to reach it."""
        current = self._listener.reconnects if self._listener is not None else 0
        return self._reconnects_before + current

    # -- keys ----------------------------------------------------------------------------------

    def stream_key(self, channel: str) -> str:
        """The Redis Stream that holds ``channel``'s history."""
        return f"{self.prefix}:s:{channel}"

    def live_key(self, channel: str) -> str:
        """The pub/sub channel that wakes listeners for ``channel``."""
        return f"{self.prefix}:p:{channel}"

    @property
    def control_key(self) -> str:
        """The pub/sub channel for cross-worker requests (counts)."""
        return f"{self.prefix}:ctl"

    def _keys(self, channel: str) -> list[str]:
        return [
            self.stream_key(channel),
            f"{self.prefix}:last",
            f"{self.prefix}:epoch",
            f"{self.prefix}:primary",
        ]

    def _takeover_args(self) -> list[Any]:
        keys = [f"{self.prefix}:primary", f"{self.prefix}:last", self.holes_key]
        return ["EVAL", TAKEOVER_SCRIPT, 3, *keys, int(app_settings.HISTORY_TTL * 1000)]

    @property
    def holes_key(self) -> str:
        """The list of id ranges a change of server may have lost (``scripts``)."""
        return f"{self.prefix}:holes"

    async def setup_connection(self, connection: Any) -> None:
        """Before a new connection's first command: note a change of server (``scripts``)."""
        await connection.send_command(*self._takeover_args())
        await connection.read_response()

    def _setup_sync_connection(self, connection: Any) -> None:
        connection.send_command(*self._takeover_args())
        connection.read_response()

    def _args(self, message: Message) -> list[Any]:
        ttl_ms = int(app_settings.HISTORY_TTL * 1000)
        return [message.dumps(), app_settings.HISTORY_SIZE, ttl_ms, self.live_key(message.channel)]

    # -- clients -------------------------------------------------------------------------------

    def client(self) -> aredis.Redis:
        """The asyncio client of the running loop (rebuilt when the loop changes)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            if self._listener is not None:
                self._reconnects_before += self._listener.reconnects
            self._listener = None
            self.presence_task = None
            self._client = self.target.async_client(setup=self.setup_connection)
        return self._client

    def listener(self) -> Listener:
        """The listener of the running loop."""
        self.client()
        if self._listener is None:
            self._listener = Listener(self, self._control)
            self._listener.wanted = self._wanted
        return self._listener

    def sync_client(self) -> redis.Redis:
        """The synchronous client for publishing from sync code."""
        with self._sync_lock:
            if self._sync_client is None:
                self._sync_client = self.target.sync_client(self._setup_sync_connection)
            return self._sync_client

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, message: Message) -> str:
        """Append to the channel's stream and wake every listener; returns the id."""
        client = self.client()
        try:
            event_id = await client.eval(
                PUBLISH_SCRIPT, 4, *self._keys(message.channel), *self._args(message)
            )
        except (*NETWORK_ERRORS, redis.RedisError) as exc:
            raise self.unavailable(exc) from exc
        message.id = str(event_id)
        return message.id

    def publish_sync(self, message: Message) -> str:
        """``publish`` for sync code, on a blocking client (safe in any thread)."""
        try:
            event_id = self.sync_client().eval(
                PUBLISH_SCRIPT, 4, *self._keys(message.channel), *self._args(message)
            )
        except (*NETWORK_ERRORS, redis.RedisError) as exc:
            raise self.unavailable(exc) from exc
        message.id = str(event_id)
        return message.id

    def unavailable(self, exc: BaseException) -> BackendUnavailable:
        """The error for an unreachable Redis: where (without the password) and why."""
        return BackendUnavailable(
            f"Redis at {self.target.describe()} is unreachable: {redact(str(exc))}"
        )

    # -- listening -----------------------------------------------------------------------------

    def subscribe(self, channel: str) -> None:
        """Listen to ``channel`` (starting the process's listener if needed)."""
        self.listener().want(channel)

    async def ready(self, channel: str, timeout: float) -> bool:
        """Wait for Redis to confirm the subscription to ``channel`` (False on timeout)."""
        return await self.listener().ready(channel, timeout)

    def unsubscribe(self, channel: str) -> None:
        """Stop listening to ``channel``."""
        self._wanted.discard(channel)
        if self._listener is not None and self._loop is asyncio.get_running_loop():
            self._listener.drop(channel)

    def _control(self, payload: str) -> None:
        try:
            request = json.loads(payload)
            reply = request["reply"]
            count = self.count_local(request["channel"], request.get("filter"))
        except (ValueError, KeyError, TypeError):
            return
        spawn(self._reply(reply, count))

    async def _reply(self, key: str, count: int) -> None:
        try:
            async with self.client().pipeline(transaction=False) as pipe:
                pipe.rpush(key, count)
                pipe.pexpire(key, 10_000)
                await pipe.execute()
        except (*NETWORK_ERRORS, redis.RedisError):
            logger.warning("could not answer a session count request")

    # -- history and counts --------------------------------------------------------------------

    async def history(
        self, channels: Iterable[str], after: str | None, limit: int | None = None
    ) -> History:
        """Stream entries after ``after`` (all with None) on ``channels``, merged in id order,
        at most ``limit``."""
        if after is None:
            key: tuple[int, ...] | None = (0, 0)
            start = "-"
        else:
            key = id_key(after)
            start = f"({after}"
        if key is None:
            return History([], False)
        names = list(channels)
        client = self.client()
        async with client.pipeline(transaction=False) as pipe:
            pipe.get(f"{self.prefix}:epoch")
            pipe.lrange(self.holes_key, 0, -1)
            for name in names:
                # Each stream's first ``limit`` are enough for the first ``limit`` of all.
                pipe.xrange(self.stream_key(name), start, "+", count=limit)
                pipe.xinfo_stream(self.stream_key(name))
            results = await pipe.execute(raise_on_error=False)
        epoch, holes = results[0], results[1]
        # From the start, the epoch does not matter: only trimming loses events.
        complete = after is None or (epoch is not None and int(epoch) <= key[0])
        if after is not None and isinstance(holes, list) and crosses_hole(holes, key):
            complete = False
        entries, infos = results[2::2], results[3::2]
        for found in entries:
            if isinstance(found, Exception):
                raise found
        if any(isinstance(info, dict) and trimmed_after(info, key) for info in infos):
            complete = False
        messages = merged(names, entries)
        return History(messages if limit is None else messages[:limit], complete)

    async def count(self, channel: str, filter: Any) -> int:
        """Ask every listening worker for its matching sessions and add the answers up."""
        client = self.client()
        reply = f"{self.prefix}:reply:{uuid.uuid4().hex}"
        request = json.dumps({"channel": channel, "filter": filter, "reply": reply})
        try:
            workers = await client.publish(self.control_key, request)
            total = 0
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.0
            for _ in range(workers):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                answer = await client.blpop([reply], timeout=remaining)
                if answer is None:
                    break
                total += int(answer[1])
            await client.delete(reply)
        except (*NETWORK_ERRORS, redis.RedisError) as exc:
            raise self.unavailable(exc) from exc
        return total

    async def ping(self) -> bool:
        """True if Redis answers PING."""
        try:
            return bool(await self.client().ping())
        except (*NETWORK_ERRORS, redis.RedisError):
            return False

    async def aclose(self) -> None:
        """Stop the listener and close the clients of this loop."""
        same_loop = self._loop is asyncio.get_running_loop()
        if self._listener is not None:
            if same_loop:
                await self._listener.aclose()
            self._reconnects_before += self._listener.reconnects
        self._listener = None
        if self._client is not None and same_loop:
            await self._client.aclose()
        self._client = None
