"""The Redis backend: Redis Streams for ids and history, pub/sub to wake one listener per process.

Publishing runs one Lua script, atomically:

1. take the next id from one counter shared by every channel (``<ms>-<seq>`` from Redis' own
   clock, never smaller than the last one), so ids are ordered across channels and a single
   ``Last-Event-ID`` can replay several channels;
2. ``XADD`` the event under that id to the channel's stream, ``MAXLEN ~ HISTORY_SIZE``, and
   refresh the stream's TTL (``XADD`` does not);
3. ``PUBLISH`` ``<id> <payload>`` on the channel's pub/sub channel.

Each process runs ONE listener: a pub/sub connection subscribed to the channels its sessions use
(plus a control channel for cross-worker counts). It delivers each message once, in id order.
When Redis goes away the listener reconnects with jittered backoff, re-subscribes, and reads the
streams from the last id it delivered (``XRANGE (id +``), so nothing published meanwhile through
a live Redis is lost; sessions keep their keep-alives throughout.

The listener speaks RESP over its own socket rather than through redis-py's ``PubSub``: that
lets it subscribe while another coroutine reads, and own its reconnect and catch-up logic.
Commands (publish, history, counts) go through redis-py's asyncio client.

Keys (all with a TTL): ``{prefix}:s:{channel}`` stream, ``{prefix}:last`` last id,
``{prefix}:epoch`` when the current id sequence began, ``{prefix}:reply:{uuid}`` count replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import ssl
import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import redis
import redis.asyncio as aredis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.connection import parse_url
from redis.retry import Retry

from ..conf import app_settings
from ..redact import redact, redact_url
from ..tasks import spawn
from .base import Backend, BackendUnavailable, History, Message, id_key, in_id_order

__all__ = ["RedisBackend"]

logger = logging.getLogger("stream_app")

PUBLISH_SCRIPT = """
local t = redis.call('TIME')
local ms = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local seq = 0
local last = redis.call('GET', KEYS[2])
if last then
  local lms, lseq = string.match(last, '^(%d+)-(%d+)$')
  lms = tonumber(lms)
  if ms <= lms then
    ms = lms
    seq = tonumber(lseq) + 1
  end
else
  redis.call('SET', KEYS[3], string.format('%d', ms), 'PX', ARGV[3])
end
local id = string.format('%d-%d', ms, seq)
redis.call('SET', KEYS[2], id, 'PX', ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[3])
redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[2], id, 'm', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PUBLISH', ARGV[4], id .. ' ' .. ARGV[1])
return id
"""

_NETWORK_ERRORS = (redis.ConnectionError, redis.TimeoutError, OSError, asyncio.IncompleteReadError)
_CLIENT_OPTIONS: dict[str, Any] = {
    "socket_connect_timeout": 1.0,
    "socket_timeout": 5.0,
    "decode_responses": True,
}
# A pooled connection that Redis closed (a restart, an idle timeout) fails on first use with a
# ConnectionError: the clients try once more, on a new connection (redis-py's asyncio pool does
# not check a connection before use, and from_url sets no retry). Not on a timeout: a slow
# command may still run, and a publish must not be made twice. (A server that dies between
# running a publish and answering it could see it made twice: rare, and a duplicate with its
# own id beats a lost event.)
_RETRIED = (redis.ConnectionError,)


class _RespError(Exception):
    pass


async def _read_reply(reader: asyncio.StreamReader) -> Any:
    line = await reader.readuntil(b"\r\n")
    kind, rest = line[:1], line[1:-2]
    if kind == b"*":
        count = int(rest)
        return None if count < 0 else [await _read_reply(reader) for _ in range(count)]
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else (await reader.readexactly(size + 2))[:-2]
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest
    if kind == b"-":
        raise _RespError(rest.decode(errors="replace"))
    raise _RespError(f"unexpected reply {line[:40]!r}")


def _command(*args: str | bytes) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode() if isinstance(arg, str) else arg
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _trimmed_after(info: dict[str, Any], key: tuple[int, ...]) -> bool:
    """Whether ``XINFO STREAM`` shows entries newer than ``key`` may have been trimmed.

    ``MAXLEN`` trimming does not move ``max-deleted-entry-id`` (only XDEL does), so: entries
    were removed (more added than remain) and the oldest one left is newer than ``key``.
    Trimming removes the oldest first, so anything removed is older than that entry; when
    it is newer than ``key``, some of what was removed may be too.
    """
    deleted = id_key(str(info.get("max-deleted-entry-id") or "0-0"))
    if deleted is not None and deleted > key:
        return True
    first = info.get("first-entry")
    if not first or int(info.get("entries-added") or 0) <= int(info.get("length") or 0):
        return False
    first_key = id_key(str(first[0]))
    return first_key is not None and first_key > key


def _merged(names: list[str], entries: list[Any]) -> list[Message]:
    """The XRANGE replies of the streams of ``names`` as one history in id order."""
    return in_id_order(
        [
            Message.loads(name, entry_id, fields["m"])
            for name, found in zip(names, entries, strict=True)
            for entry_id, fields in found
        ]
    )


class RedisBackend(Backend):
    """Production backend for several workers sharing one Redis."""

    def __init__(self) -> None:
        super().__init__()
        self.url: str = app_settings.REDIS_URL
        self.prefix: str = app_settings.KEY_PREFIX
        self.connected = False
        self.reconnects = 0
        self._wanted: set[str] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: aredis.Redis | None = None
        self._sync_client: redis.Redis | None = None
        self._sync_lock = threading.Lock()
        self._listener: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._last_key: tuple[int, ...] | None = None
        self._last_id: str | None = None
        # Channels whose SUBSCRIBE Redis has confirmed on the current connection.
        self._confirmed: set[str] = set()
        self._confirm_waiters: dict[str, list[asyncio.Future[None]]] = {}

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
        return [self.stream_key(channel), f"{self.prefix}:last", f"{self.prefix}:epoch"]

    def _args(self, message: Message) -> list[Any]:
        ttl_ms = int(app_settings.HISTORY_TTL * 1000)
        return [message.dumps(), app_settings.HISTORY_SIZE, ttl_ms, self.live_key(message.channel)]

    # -- clients -------------------------------------------------------------------------------

    def client(self) -> aredis.Redis:
        """The asyncio client of the running loop (rebuilt when the loop changes)."""
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._loop = loop
            self._listener = None
            self._writer = None
            self._client = aredis.Redis.from_url(
                self.url,
                retry=AsyncRetry(NoBackoff(), 1, supported_errors=_RETRIED),
                **_CLIENT_OPTIONS,
            )
        return self._client

    def sync_client(self) -> redis.Redis:
        """The synchronous client for publishing from sync code."""
        with self._sync_lock:
            if self._sync_client is None:
                self._sync_client = redis.Redis.from_url(
                    self.url,
                    retry=Retry(NoBackoff(), 1, supported_errors=_RETRIED),
                    **_CLIENT_OPTIONS,
                )
            return self._sync_client

    # -- publishing ----------------------------------------------------------------------------

    async def publish(self, message: Message) -> str:
        """Append to the channel's stream and wake every listener; returns the id."""
        client = self.client()
        try:
            event_id = await client.eval(
                PUBLISH_SCRIPT, 3, *self._keys(message.channel), *self._args(message)
            )
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(exc) from exc
        message.id = str(event_id)
        return message.id

    def publish_sync(self, message: Message) -> str:
        """``publish`` for sync code, on a blocking client (safe in any thread)."""
        try:
            event_id = self.sync_client().eval(
                PUBLISH_SCRIPT, 3, *self._keys(message.channel), *self._args(message)
            )
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(exc) from exc
        message.id = str(event_id)
        return message.id

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        """The error for an unreachable Redis: where (without the password) and why."""
        return BackendUnavailable(
            f"Redis at {redact_url(self.url)} is unreachable: {redact(str(exc))}"
        )

    # -- listening -----------------------------------------------------------------------------

    def subscribe(self, channel: str) -> None:
        """Listen to ``channel`` (starting the process's listener if needed)."""
        self._wanted.add(channel)
        self.client()
        if self._listener is None or self._listener.done():
            self._listener = asyncio.ensure_future(self._listen())
        elif self._writer is not None:
            self._writer.write(_command("SUBSCRIBE", self.live_key(channel)))

    async def ready(self, channel: str, timeout: float) -> bool:
        """Wait for Redis to confirm the subscription to ``channel`` (False on timeout)."""
        if channel in self._confirmed:
            return True
        future = asyncio.get_running_loop().create_future()
        self._confirm_waiters.setdefault(channel, []).append(future)
        try:
            await asyncio.wait_for(future, timeout)
        except TimeoutError:
            return False
        return True

    def _confirm(self, name: bytes, prefix: bytes) -> None:
        if not name.startswith(prefix):
            return
        channel = name[len(prefix) :].decode()
        self._confirmed.add(channel)
        for future in self._confirm_waiters.pop(channel, ()):
            if not future.done():
                future.set_result(None)

    def unsubscribe(self, channel: str) -> None:
        """Stop listening to ``channel``."""
        self._wanted.discard(channel)
        self._confirmed.discard(channel)
        if self._writer is not None and self._loop is asyncio.get_running_loop():
            self._writer.write(_command("UNSUBSCRIBE", self.live_key(channel)))

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        options = parse_url(self.url)  # type: ignore[no-untyped-call]
        if "path" in options:
            reader, writer = await asyncio.open_unix_connection(options["path"])
        else:
            context = ssl.create_default_context() if self.url.startswith("rediss:") else None
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    options.get("host", "127.0.0.1"), options.get("port", 6379), ssl=context
                ),
                timeout=2.0,
            )
        if options.get("password"):
            auth = [options["username"]] if options.get("username") else []
            writer.write(_command("AUTH", *auth, options["password"]))
            await _read_reply(reader)
        return reader, writer

    async def _listen(self) -> None:
        started_ms = time.time_ns() // 1_000_000
        failed = False
        delay = 0.05
        prefix = f"{self.prefix}:p:".encode()
        control = self.control_key.encode()
        while True:
            writer = None
            try:
                reader, writer = await self._connect()
                if self._last_key is None:
                    # Where delivery starts, so that catch-up after a reconnect has a floor
                    # even if nothing was delivered yet: Redis' clock now, or, if Redis was
                    # unreachable when the first session subscribed, the local clock back
                    # then (less a second for skew: better an old event than a lost one).
                    if failed:
                        floor = started_ms - 1000
                    else:
                        seconds, micros = await self.client().time()
                        floor = seconds * 1000 + micros // 1000
                    self._last_key, self._last_id = (floor, -1), f"{floor}-0"
                keys = [self.control_key, *(self.live_key(c) for c in self._wanted)]
                writer.write(_command("SUBSCRIBE", *keys))
                self._writer = writer
                await self._catch_up()
                if not self.connected:
                    self.connected = True
                    logger.info("stream_app listener connected to Redis")
                delay = 0.05
                while True:
                    reply = await _read_reply(reader)
                    if not isinstance(reply, list) or len(reply) < 3:
                        continue
                    if reply[0] == b"subscribe":
                        self._confirm(reply[1], prefix)
                        continue
                    if reply[0] != b"message":
                        continue
                    name, payload = reply[1], reply[2]
                    if name == control:
                        self._control(payload)
                    elif name.startswith(prefix):
                        self._received(name[len(prefix) :].decode(), payload)
            except asyncio.CancelledError:
                raise
            except (*_NETWORK_ERRORS, _RespError) as exc:
                if self.connected:
                    logger.warning("stream_app lost Redis (%s); reconnecting", redact(str(exc)))
                self.connected = False
                self.reconnects += 1
                failed = True
            finally:
                self._writer = None
                self._confirmed.clear()
                if writer is not None:
                    writer.close()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, 5.0)

    def _received(self, channel: str, payload: bytes) -> None:
        event_id, _, body = payload.partition(b" ")
        text_id = event_id.decode()
        key = id_key(text_id)
        if key is None:
            return
        if self._last_key is not None and key <= self._last_key:
            return
        try:
            message = Message.loads(channel, text_id, body)
        except (ValueError, KeyError, TypeError):
            logger.warning("dropped a malformed message on channel %r", channel)
            return
        self._last_key, self._last_id = key, text_id
        self.deliver(message)

    async def _catch_up(self) -> None:
        """Deliver what was published on our channels while the listener was away.

        Reads from the last delivered id inclusive (the floor set at first connect is not an
        entry id) and skips what was already delivered.
        """
        names = list(self._wanted)
        if not names or self._last_id is None:
            return
        async with self.client().pipeline(transaction=False) as pipe:
            for name in names:
                pipe.xrange(self.stream_key(name), self._last_id, "+")
            results = await pipe.execute()
        for message in _merged(names, results):
            key = id_key(message.id)
            if key is not None and (self._last_key is None or key > self._last_key):
                self._last_key, self._last_id = key, message.id
                self.deliver(message)

    def _control(self, payload: bytes) -> None:
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
        except _NETWORK_ERRORS:
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
            for name in names:
                # Each stream's first ``limit`` are enough for the first ``limit`` of all.
                pipe.xrange(self.stream_key(name), start, "+", count=limit)
                pipe.xinfo_stream(self.stream_key(name))
            results = await pipe.execute(raise_on_error=False)
        epoch = results[0]
        # From the start, the epoch does not matter: only trimming loses events.
        complete = after is None or (epoch is not None and int(epoch) <= key[0])
        entries, infos = results[1::2], results[2::2]
        for found in entries:
            if isinstance(found, Exception):
                raise found
        if any(isinstance(info, dict) and _trimmed_after(info, key) for info in infos):
            complete = False
        messages = _merged(names, entries)
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
        except _NETWORK_ERRORS as exc:
            raise self._unavailable(exc) from exc
        return total

    async def ping(self) -> bool:
        """True if Redis answers PING."""
        try:
            return bool(await self.client().ping())
        except _NETWORK_ERRORS:
            return False

    async def aclose(self) -> None:
        """Stop the listener and close the clients of this loop."""
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
        if self._client is not None and self._loop is asyncio.get_running_loop():
            await self._client.aclose()
        self._client = None
        self.connected = False
