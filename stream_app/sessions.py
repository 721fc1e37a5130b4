"""Sessions: one client connection, fed by pushes and drained by one writer.

A session holds a bounded queue of *encoded* frames. Producers (``push``, ``send``, ``iterate``,
``stream``, channel fan-out) append bytes; the writer takes everything queued at each wake-up and
sends it as one chunk, so an idle stream costs one suspended coroutine and a busy one costs one
write per loop turn, not one per event. A broadcast is encoded once and the same ``bytes`` object
is queued for every recipient.

Two writers share the same loop (``_chunks``): Django's own ``StreamingHttpResponse`` iteration,
and the hand-off path of ``stream_app.asgi`` that streams outside Django's per-request thread.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import random
import weakref
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import TYPE_CHECKING, Any, Literal

from django.http import HttpRequest, StreamingHttpResponse

from . import protocol, tasks
from .conf import app_settings
from .encoding import Serializer, compact_json
from .guards import require_asgi
from .signals import session_connected, session_disconnected

if TYPE_CHECKING:
    from .channels import Channel

__all__ = [
    "SSE_HEADERS",
    "UNSET",
    "QueueFull",
    "RequestSessions",
    "Serializer",
    "Session",
    "SessionResponse",
    "Unset",
    "create_response",
    "create_session",
    "live_sessions",
    "stats",
    "track_sessions",
]

logger = logging.getLogger("stream_app")

SSE_HEADERS = {
    "Cache-Control": "no-cache",
    # nginx: do not buffer this response (proxy_buffering off for one location).
    "X-Accel-Buffering": "no",
    # Django's GZipMiddleware (and nginx's gzip) skip a response that already names an encoding;
    # Django has no other opt-out, and a compressor holds events back or splits them oddly.
    "Content-Encoding": "identity",
}
KEEP_ALIVE_FRAME = b":\n\n"
MAX_LAST_EVENT_ID = 256
#: Seconds after which a session whose response has not started streaming is abandoned: the
#: backstop for handlers that cannot tell (Django's own) when a response was dropped unsent.
START_TIMEOUT = 60.0
Overflow = Literal["close", "raise"]


class Unset:
    """The type of UNSET: "use the setting", as distinct from None, "disabled"."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


class QueueFull(Exception):
    """A push found the session's bounded queue full (``overflow="raise"``)."""


class _Stats:
    """Process-wide counters, read by the metrics endpoint and the tests."""

    __slots__ = (
        "closed",
        "events_published",
        "events_queued",
        "opened",
        "publish_errors",
        "replay_hits",
        "replay_resets",
        "slow_consumers",
    )

    def __init__(self) -> None:
        self.opened = 0
        self.closed = 0
        self.slow_consumers = 0
        self.events_queued = 0
        # Counted in channels: broadcasts published / refused by the backend, and replays
        # that found the client's Last-Event-ID / sent it a reset event instead.
        self.events_published = 0
        self.publish_errors = 0
        self.replay_hits = 0
        self.replay_resets = 0

    @property
    def open(self) -> int:
        """Sessions streaming now."""
        return self.opened - self.closed


stats = _Stats()

#: Every session streaming in this process (for graceful shutdown and metrics).
live_sessions: set[Session] = set()


class RequestSessions:
    """The sessions created while one request is handled (see ``track_sessions``).

    A session whose response never streams (the client left while the view ran, the view
    failed after creating it, or another response was sent) would otherwise stay registered on
    its channels and keep its connection slot for good: nothing else ever ends it.
    """

    __slots__ = ("ended", "sessions")

    def __init__(self) -> None:
        self.sessions: list[Session] = []
        self.ended = False

    def add(self, session: Session) -> None:
        """Track ``session``; once the request has ended, abandon it at once."""
        if self.ended:
            # The handler has given up on the request (the client left) while the view still
            # runs in its thread: this session can never stream.
            session.abandon()
        else:
            self.sessions.append(session)

    def end(self, keep: Session | None = None) -> None:
        """The request is over: abandon every session it created but ``keep``, and later ones."""
        self.ended = True
        sessions, self.sessions = self.sessions, []
        for session in sessions:
            if session is not keep:
                session.abandon()


_request_sessions: contextvars.ContextVar[RequestSessions | None] = contextvars.ContextVar(
    "stream_app_request_sessions", default=None
)


@contextmanager
def track_sessions() -> Iterator[RequestSessions]:
    """Track the sessions created in this context (for an ASGI handler, around one request).

    The handler calls ``end(keep=...)`` on the result when the request is over, keeping the
    session it streams itself, if any.
    """
    tracker = RequestSessions()
    token = _request_sessions.set(tracker)
    try:
        yield tracker
    finally:
        _request_sessions.reset(token)


class _Heartbeat:
    """One timer per event loop that writes keep-alive comments to every quiet session.

    A timer per session would cost a handle and a reschedule on every write; walking the sessions
    every quarter of the shortest keep-alive costs a few nanoseconds per session instead. A
    session hears a comment after between 1 and 1.25 keep-alive periods of silence.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.sessions: set[Session] = set()
        self.handle: asyncio.TimerHandle | None = None
        self.tick = 1.0

    def add(self, session: Session) -> None:
        self.sessions.add(session)
        # Lifetimes and write timeouts need no finer clock than a second.
        tick = max(0.01, session.keep_alive / 4) if session.keep_alive else 1.0
        if self.handle is None or tick < self.tick:
            self.tick = tick if self.handle is None else min(self.tick, tick)
            if self.handle is not None:
                self.handle.cancel()
            self.handle = self.loop.call_later(self.tick, self._beat)

    def discard(self, session: Session) -> None:
        self.sessions.discard(session)
        if not self.sessions and self.handle is not None:
            self.handle.cancel()
            self.handle = None

    def _beat(self) -> None:
        now = self.loop.time()
        for session in self.sessions:
            keep_alive = session.keep_alive
            if keep_alive is not None and now - session._last_write >= keep_alive:
                session._enqueue(KEEP_ALIVE_FRAME, keep_alive=True)
            session._check_write_timeout(now)
            if session._deadline is not None and now >= session._deadline:
                session._deadline = None
                session.close_reason = "lifetime"
                session.close()
        self.handle = self.loop.call_later(self.tick, self._beat) if self.sessions else None


_heartbeats: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Heartbeat] = (
    weakref.WeakKeyDictionary()
)


def _heartbeat() -> _Heartbeat:
    loop = asyncio.get_running_loop()
    beat = _heartbeats.get(loop)
    if beat is None:
        beat = _heartbeats[loop] = _Heartbeat(loop)
    return beat


def _client_event_id(request: HttpRequest) -> str | None:
    """The client's last event id, from the header or ``?lastEventId=``; None when unusable.

    It is untrusted input that may be echoed into ``id:`` lines and backend queries, so an id
    that is too long or holds a line break or NUL is ignored rather than repaired.
    """
    value = request.META.get("HTTP_LAST_EVENT_ID")
    if value is None:
        value = request.GET.get("lastEventId")
    if not value:
        return None
    if len(value) > MAX_LAST_EVENT_ID or any(c in value for c in "\r\n\0"):
        logger.info("ignored an invalid Last-Event-ID (%d characters)", len(value))
        return None
    return value


class _Body:
    """The response's ``streaming_content``: iterates the session's writer when Django streams.

    It has no ``close`` so that Django's ``response.close()`` (run when the hand-off path has
    already taken the stream over) never ends the session.
    """

    __slots__ = ("session",)

    def __init__(self, session: Session) -> None:
        self.session = session

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self.session._chunks()


class SessionResponse(StreamingHttpResponse):
    """The ``StreamingHttpResponse`` of a session: ``text/event-stream``, never buffered."""

    session: Session

    def __init__(self, session: Session, status: int, headers: dict[str, str] | None) -> None:
        merged = {**SSE_HEADERS, **(headers or {})}
        super().__init__(
            _Body(session),
            status=status,
            content_type="text/event-stream; charset=utf-8",
            headers=merged,
        )
        self.session = session

    def _set_streaming_content(self, value: Any) -> None:
        if isinstance(value, _Body):
            # Keep the body itself (an async iterable): the writer is created only if Django
            # streams this response, not for every response handed off to stream_app.asgi.
            self._iterator = value
            self.is_async = True
        else:
            super()._set_streaming_content(value)  # type: ignore[misc]


class Session:
    """One SSE client connection.

    Build it with ``await create_session(request, ...)`` and return ``session.response`` from the
    view; push events before or after returning. See the README for the full contract.
    """

    __slots__ = (
        "__weakref__",
        "_callback_task",
        "_channels",
        "_closed",
        "_closed_waiter",
        "_closing",
        "_deadline",
        "_last_write",
        "_on_close",
        "_queue",
        "_room",
        "_sending_since",
        "_start_callback",
        "_start_timer",
        "_started",
        "_task",
        "_waiter",
        "close_reason",
        "hold",
        "keep_alive",
        "last_event_id",
        "max_lifetime",
        "max_queue",
        "method",
        "overflow",
        "request",
        "response",
        "retry",
        "sanitizer",
        "serializer",
        "state",
        "write_timeout",
    )

    def __init__(
        self,
        request: HttpRequest | None,
        *,
        retry: int | Unset | None = UNSET,
        keep_alive: float | Unset | None = UNSET,
        status: int = 200,
        headers: dict[str, str] | None = None,
        trust_client_event_id: bool = True,
        serializer: Any = json,
        sanitizer: Callable[[str], str] | None = None,
        state: dict[str, Any] | None = None,
        max_queue: int | None = None,
        overflow: Overflow = "close",
        write_timeout: float | Unset | None = UNSET,
        max_lifetime: float | Unset | None = UNSET,
        response: SessionResponse | None = None,
    ) -> None:
        # UNSET means "the setting", None "disabled", for every option that has a setting.
        self.retry: int | None = app_settings.RETRY if isinstance(retry, Unset) else retry
        self.keep_alive: float | None = (
            app_settings.KEEP_ALIVE if isinstance(keep_alive, Unset) else keep_alive
        )
        if self.retry is not None:
            protocol.check_retry(self.retry)
        if overflow not in ("close", "raise"):
            raise ValueError(f"overflow must be 'close' or 'raise', not {overflow!r}")
        self.request: HttpRequest | None = request
        self.method = request.method if request is not None else "GET"
        self.serializer = serializer
        self.sanitizer = sanitizer
        self.state: dict[str, Any] = {} if state is None else state
        self.max_queue = app_settings.MAX_QUEUE if max_queue is None else max_queue
        self.overflow = overflow
        self.write_timeout = (
            app_settings.WRITE_TIMEOUT if isinstance(write_timeout, Unset) else write_timeout
        )
        self.max_lifetime = (
            app_settings.MAX_LIFETIME if isinstance(max_lifetime, Unset) else max_lifetime
        )
        self._deadline: float | None = None
        self.last_event_id = (
            _client_event_id(request) if trust_client_event_id and request is not None else None
        )
        self.close_reason: str | None = None
        self._queue: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._room: asyncio.Future[None] | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._started = False
        self._closing = False
        self._closed = False
        self._last_write = 0.0
        self._sending_since: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._callback_task: asyncio.Task[None] | None = None
        self._start_callback: Callable[[Session], Awaitable[object]] | None = None
        self._channels: set[Channel] | None = None
        #: Set by the channel layer while it replays history: live delivery then hands each
        #: ``(event id, frame)`` to it instead of queueing it (``stream_app.replay``).
        self.hold: Callable[[str, bytes], None] | None = None
        self._on_close: list[Callable[[Session], object]] | None = None
        # SSEResponse builds itself around its session and passes itself in.
        self.response = response or SessionResponse(self, status, headers)
        self._start_timer: asyncio.TimerHandle | None = None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            pass  # Built outside an event loop: it cannot stream from here anyway.
        else:
            self._start_timer = loop.call_later(START_TIMEOUT, self.abandon)
        tracker = _request_sessions.get()
        if tracker is not None:
            tracker.add(self)

    def __repr__(self) -> str:
        status = "closed" if self._closed else "open" if self._started else "new"
        return f"<Session {status} queued={len(self._queue)} state={self.state!r}>"

    # -- state ---------------------------------------------------------------------------------

    @property
    def is_connected(self) -> bool:
        """True while the response streams; False before it starts and once it has ended."""
        return self._started and not self._closed

    @property
    def is_closed(self) -> bool:
        """True once the stream has ended (closed here or by the client)."""
        return self._closed

    @property
    def queued(self) -> int:
        """Frames waiting to be written."""
        return len(self._queue)

    def on_start(self, callback: Callable[[Session], Awaitable[object]]) -> None:
        """Run ``await callback(session)`` once the stream starts (see ``create_response``)."""
        self._start_callback = callback

    def on_close(self, callback: Callable[[Session], object]) -> None:
        """Call ``callback(session)`` when the stream ends, however it ends (now if it has)."""
        if self._closed:
            # Ended already (abandoned while its view still ran): what the hook releases must
            # still be released.
            callback(self)
            return
        if self._on_close is None:
            self._on_close = []
        self._on_close.append(callback)

    # -- producing -----------------------------------------------------------------------------

    def serialize(self, data: Any) -> str:
        """The ``data:`` text for ``data``: ``str`` as is, anything else through the serializer."""
        if isinstance(data, str):
            text = data
        elif isinstance(data, bytes | bytearray | memoryview):
            raise TypeError("push() takes text or serializable data, not bytes: decode it first")
        elif self.serializer is json:
            text = compact_json(data)
        else:
            text = self.serializer.dumps(data)
        if self.sanitizer is not None:
            text = self.sanitizer(text)
        return text

    def encode(self, data: Any, event: str | None = None, id: str | None = None) -> bytes:
        """The wire bytes of one event, as ``push`` would queue them."""
        return protocol.encode_data(self.serialize(data), event, id)

    def push(self, data: Any, event: str | None = None, id: str | None = None) -> bool:
        """Queue one event without waiting; False if the session has ended.

        A full queue follows the session's ``overflow`` policy: ``"close"`` ends the stream as a
        slow consumer (the client reconnects and replays from ``Last-Event-ID``) and returns
        False; ``"raise"`` raises ``QueueFull`` and keeps the stream.
        """
        if self._closed or self._closing:
            return False
        return self._enqueue(self.encode(data, event, id))

    async def send(self, data: Any, event: str | None = None, id: str | None = None) -> bool:
        """Queue one event, first waiting for room in the queue (backpressure)."""
        frame = self.encode(data, event, id)
        if not await self._wait_for_room():
            return False
        return self._enqueue(frame)

    async def iterate(
        self, source: Iterable[Any] | AsyncIterable[Any], event: str | None = None
    ) -> bool:
        """Push every item of a sync or async iterable, waiting for room as needed.

        Returns False if the session ended before the source was exhausted.
        """
        queue = self._queue
        if isinstance(source, AsyncIterable):
            async for item in source:
                if not await self.send(item, event):
                    return False
            return True
        for item in source:
            frame = self.encode(item, event)
            # While there is room, queue without a coroutine per item; the writer takes the
            # whole batch at its next turn.
            if (len(queue) >= self.max_queue or self._closing) and not await self._wait_for_room():
                return False
            if not self._enqueue(frame):
                return False
        return True

    async def stream(
        self,
        source: AsyncIterable[str | bytes],
        event: str | None = None,
        transform: Callable[[str], Any] | None = None,
    ) -> bool:
        """Push each chunk of a byte or text stream as one event (bytes decoded as UTF-8).

        ``transform`` maps each decoded chunk to the data to push (a ``str`` is sent as is).
        """
        async for chunk in source:
            text = chunk.decode() if isinstance(chunk, bytes) else chunk
            if not await self.send(transform(text) if transform else text, event):
                return False
        return True

    @asynccontextmanager
    async def batch(self) -> AsyncIterator[EventBuffer]:
        """Collect events in a buffer and queue them as one write when the block exits."""
        buffer = EventBuffer(self)
        yield buffer
        await self.flush(buffer)

    async def flush(self, buffer: EventBuffer) -> bool:
        """Queue the events of ``buffer`` as one frame (what ``batch()`` does on exit)."""
        if not buffer:
            return not self._closed
        frame = buffer.getvalue()
        buffer.clear()
        if not await self._wait_for_room():
            return False
        return self._enqueue(frame)

    async def batch_call(self, callback: Callable[[EventBuffer], Awaitable[object]]) -> bool:
        """The callback form of ``batch()``: ``await session.batch_call(fill)``."""
        buffer = EventBuffer(self)
        await callback(buffer)
        return await self.flush(buffer)

    def put(self, frame: bytes) -> bool:
        """Queue one encoded frame (``protocol.encode_data`` output) without waiting.

        The same overflow policy as ``push``; False if the session has ended. For producers
        that encode themselves: channel fan-out, replay.
        """
        return self._enqueue(frame)

    async def wait_for_room(self) -> bool:
        """Wait until the queue has room; False if the session ended or is closing meanwhile."""
        return await self._wait_for_room()

    def _enqueue(self, frame: bytes, keep_alive: bool = False) -> bool:
        """Queue encoded bytes; the one place every producer goes through."""
        if self._closed:
            return False
        queue = self._queue
        if len(queue) >= self.max_queue and not keep_alive:
            if self.overflow == "raise":
                raise QueueFull(f"session queue is full ({self.max_queue} events)")
            stats.slow_consumers += 1
            logger.warning("closing a slow consumer: %d events queued", len(queue))
            self._abort("slow_consumer")
            return False
        queue.append(frame)
        stats.events_queued += 1
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        return True

    async def _wait_for_room(self) -> bool:
        while len(self._queue) >= self.max_queue and not self._closed:
            if self._room is None or self._room.done():
                self._room = asyncio.get_running_loop().create_future()
            await self._room
        return not self._closed and not self._closing

    # -- ending --------------------------------------------------------------------------------

    def end_for_shutdown(self) -> None:
        """Tell the client to reconnect in a jittered while, then close (graceful shutdown)."""
        if self._closed:
            return
        self._enqueue(tasks.retry_frame(), keep_alive=True)
        self.close_reason = "shutdown"
        self.close()

    def close(self) -> None:
        """End the stream once everything queued has been written. Idempotent."""
        if self._closed or self._closing:
            return
        self._closing = True
        if not self._started:
            return
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def abandon(self, reason: str = "not_started") -> None:
        """End a session whose response will never stream, now; no-op once it has started.

        It leaves its channels and runs its close hooks (which give back its connection slot).
        For a view that fails, or learns that its client left, after creating a session.
        ``stream_app.asgi``'s handler does it for every session a request created but did not
        stream; under other handlers ``START_TIMEOUT`` is the backstop.
        """
        if not self._started:
            self._abort(reason)

    async def wait_closed(self) -> None:
        """Wait until the stream has ended."""
        if self._closed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._closed_waiter)

    def abort(self, reason: str) -> None:
        """End the stream now, dropping what is queued (the client replays it on reconnect).

        ``reason`` becomes ``close_reason`` (``shutdown``, ``error``...).
        """
        self._abort(reason)

    def _abort(self, reason: str) -> None:
        """End the stream now, dropping what is queued (the client replays it on reconnect)."""
        if self._closed:
            return
        self.close_reason = reason
        self._queue.clear()
        self._closing = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        elif self._sending_since is not None and self._task is not None:
            # The writer is stuck in a write to a peer that does not read.
            self._task.cancel()
        if not self._started:
            self._finish()

    def _check_write_timeout(self, now: float) -> None:
        since = self._sending_since
        if since is not None and self.write_timeout and now - since > self.write_timeout:
            stats.slow_consumers += 1
            logger.warning("closing a stuck client: one write took over %.1fs", self.write_timeout)
            self._abort("write_timeout")

    def _finish(self) -> None:
        """Mark the session ended and run the hooks; quick and idempotent (it runs in finally)."""
        if self._closed:
            return
        self._closed = True
        self.close_reason = self.close_reason or "closed"
        self._queue.clear()
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        if self._started:
            stats.closed += 1
            live_sessions.discard(self)
            _heartbeat().discard(self)
        for future in (self._room, self._closed_waiter):
            if future is not None and not future.done():
                future.set_result(None)
        if self._callback_task is not None and not self._callback_task.done():
            self._callback_task.cancel()
        if self._channels:
            for channel in list(self._channels):
                channel.deregister(self)
        for callback in self._on_close or ():
            try:
                callback(self)
            except Exception:
                logger.exception("a session on_close callback failed")
        # Paired with session_connected: a session that never started was never connected.
        if self._started and session_disconnected.receivers:
            session_disconnected.send(sender=Session, session=self, reason=self.close_reason)
        self.request = None

    # -- writing -------------------------------------------------------------------------------

    def _start(self) -> None:
        self._started = True
        if self._start_timer is not None:
            self._start_timer.cancel()
            self._start_timer = None
        self._task = asyncio.current_task()
        loop = asyncio.get_running_loop()
        self._last_write = loop.time()
        stats.opened += 1
        live_sessions.add(self)
        if self.retry is not None:
            self._queue.appendleft(f"retry: {self.retry}\n\n".encode())
        elif not self._queue:
            # Some servers (daphne) hold the headers back until the first body byte, and a
            # browser fires "open" only when they arrive: open with a comment.
            self._queue.append(KEEP_ALIVE_FRAME)
        if self.max_lifetime:
            # Up to 20% less, so that clients connected together do not all come back together.
            self._deadline = self._last_write + self.max_lifetime * (1 - random.random() * 0.2)
        _heartbeat().add(self)
        if tasks.is_shutting_down():
            self.end_for_shutdown()
        if session_connected.receivers:
            session_connected.send(sender=Session, session=self)
        if self._start_callback is not None:
            self._run_callback(self._start_callback)

    async def _chunks(self) -> AsyncIterator[bytes]:
        """The writer: yield everything queued as one chunk per wake-up until the stream ends."""
        if self.method == "HEAD":
            # The headers are the whole response: the session ends before it starts.
            self.abandon("head")
            return
        if self._closed:
            return
        self._start()
        loop = asyncio.get_running_loop()
        queue = self._queue
        try:
            while True:
                if queue:
                    chunk = b"".join(queue) if len(queue) > 1 else queue[0]
                    queue.clear()
                    room = self._room
                    if room is not None and not room.done():
                        room.set_result(None)
                    self._sending_since = self._last_write = loop.time()
                    yield chunk
                    self._sending_since = None
                elif self._closing:
                    return
                else:
                    self._waiter = waiter = loop.create_future()
                    await waiter
                    self._waiter = None
        except asyncio.CancelledError:
            if self.close_reason is None:
                self.close_reason = "disconnect"
            raise
        finally:
            self._finish()

    async def run_asgi(
        self, send: Callable[..., Awaitable[None]], receive: Callable[..., Any]
    ) -> None:
        """Stream to an ASGI ``send`` whose ``http.response.start`` was already sent.

        Used by ``stream_app.asgi`` after Django has handled the request. A second task waits for
        ``http.disconnect`` so that a client that leaves ends the stream at once.
        """
        watcher = asyncio.ensure_future(self._watch_disconnect(receive))
        try:
            async for chunk in self._chunks():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                # The request's work is done once the stream runs (the connect hooks have
                # seen it): drop it, a few kilobytes and a hundred objects per idle stream.
                self.request = None
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            # uvicorn raises ClientDisconnected (an OSError) on a write after a disconnect.
            self._abort("disconnect")
        except asyncio.CancelledError:
            # Our own abort of a writer stuck in a write ends the response; anything else is the
            # server's cancellation and goes on up.
            if self.close_reason not in ("slow_consumer", "write_timeout", "shutdown"):
                raise
            _drop_connection(send)
        finally:
            watcher.cancel()
            self._finish()

    async def _watch_disconnect(self, receive: Callable[..., Any]) -> None:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                self._abort("disconnect")
                return

    def _run_callback(self, callback: Callable[[Session], Awaitable[object]]) -> None:
        async def run() -> None:
            try:
                await callback(self)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("a stream callback failed")
                self._enqueue(error_frame(exc))
                self.close()
                return
            if not self._channels:
                self.close()

        self._callback_task = asyncio.ensure_future(run())


def _drop_connection(send: Callable[..., Awaitable[None]]) -> None:
    """Drop the connection under an ASGI ``send`` at once, with the data it still buffers.

    Called when our writer was stuck in a write, that is when the peer stopped reading. Ending
    the response is not enough under uvicorn: it closes the transport gracefully, which waits
    to flush its buffer to the peer first, so a peer that never reads keeps the socket and the
    buffered chunk for good. ASGI has no message that aborts a connection; uvicorn's ``send`` is
    a method of its request cycle, whose ``transport`` attribute (uvicorn's own, not ASGI's:
    ``tests/test_stalled_clients.py`` fails if it goes) is an asyncio transport, with the public
    ``abort()``. Servers without one need nothing: daphne's writes never wait.
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if isinstance(transport, asyncio.WriteTransport):
        transport.abort()


class EventBuffer:
    """Events encoded into one buffer, queued together by ``Session.batch``."""

    __slots__ = ("_parts", "_session")

    def __init__(self, session: Session) -> None:
        self._session = session
        self._parts: list[bytes] = []

    def push(self, data: Any, event: str | None = None, id: str | None = None) -> None:
        """Add one event to the buffer."""
        self._parts.append(self._session.encode(data, event, id))

    def comment(self, text: str = "") -> None:
        """Add a comment line to the buffer."""
        self._parts.append(protocol.comment(text))

    def getvalue(self) -> bytes:
        """Everything buffered, as one frame."""
        return b"".join(self._parts)

    def clear(self) -> None:
        """Empty the buffer."""
        self._parts.clear()

    def __len__(self) -> int:
        return len(self._parts)


def error_frame(exc: BaseException) -> bytes:
    """The ``event: error`` frame for an exception raised after the first byte."""
    from django.conf import settings

    body: dict[str, Any] = {"message": "The stream failed.", "type": "internal_error"}
    if settings.DEBUG:
        import traceback

        body["message"] = f"{type(exc).__name__}: {exc}"
        body["traceback"] = traceback.format_exception(exc)
    return protocol.encode_data(compact_json(body), "error")


async def create_session(
    request: HttpRequest,
    *,
    retry: int | Unset | None = UNSET,
    keep_alive: float | Unset | None = UNSET,
    status: int = 200,
    headers: dict[str, str] | None = None,
    trust_client_event_id: bool = True,
    serializer: Any = json,
    sanitizer: Callable[[str], str] | None = None,
    state: dict[str, Any] | None = None,
    max_queue: int | None = None,
    overflow: Overflow = "close",
    write_timeout: float | Unset | None = UNSET,
    max_lifetime: float | Unset | None = UNSET,
) -> Session:
    """Create a session for ``request``; return ``session.response`` from the view.

    ``retry`` (ms) and ``keep_alive`` (s) default to the ``RETRY`` and ``KEEP_ALIVE`` settings;
    pass None to disable either. ``serializer`` is any object with ``dumps`` (``json`` by
    default, with Django's encoder for dates, decimals and UUIDs).
    """
    require_asgi(request)
    return Session(
        request,
        retry=retry,
        keep_alive=keep_alive,
        status=status,
        headers=headers,
        trust_client_event_id=trust_client_event_id,
        serializer=serializer,
        sanitizer=sanitizer,
        state=state,
        max_queue=max_queue,
        overflow=overflow,
        write_timeout=write_timeout,
        max_lifetime=max_lifetime,
    )


async def create_response(
    request: HttpRequest,
    callback: Callable[[Session], Awaitable[object]],
    **options: Any,
) -> SessionResponse:
    """A response that runs ``await callback(session)`` once the stream starts.

    The stream closes when the callback returns, unless the session was registered on a
    channel; an exception in the callback becomes an ``error`` event and ends the stream.
    """
    session = await create_session(request, **options)
    session.on_start(callback)
    return session.response
