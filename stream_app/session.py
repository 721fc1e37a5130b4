"""The session: one client connection, fed by pushes and drained by one writer.

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
import json
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from django.http import HttpRequest

from . import protocol, tasks
from .conf import app_settings
from .encoding import KEEP_ALIVE_FRAME, error_frame
from .heartbeat import heartbeat
from .lastevent import client_event_id
from .outbox import Outbox, Overflow
from .signals import session_connected, session_disconnected
from .stats import live_sessions, stats
from .streaming import SessionResponse, drop_connection
from .tracking import current_tracker

if TYPE_CHECKING:
    from .channels import Channel

__all__ = ["START_TIMEOUT", "UNSET", "Session", "Unset"]

logger = logging.getLogger("stream_app")

#: Seconds after which a session whose response has not started streaming is abandoned: the
#: backstop for handlers that cannot tell (Django's own) when a response was dropped unsent.
START_TIMEOUT = 60.0


class Unset:
    """The type of UNSET: "use the setting", as distinct from None, "disabled"."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET = Unset()


class Session(Outbox):
    """One SSE client connection.

    Build it with ``await create_session(request, ...)`` and return ``session.response`` from the
    view; push events before or after returning. See the README for the full contract.
    """

    __slots__ = (
        "__weakref__",
        "_callback_task",
        "_closed_waiter",
        "_deadline",
        "_last_write",
        "_on_close",
        "_sending_since",
        "_start_callback",
        "_start_timer",
        "_started",
        "_task",
        "channels",
        "close_reason",
        "ends_on",
        "hold",
        "keep_alive",
        "last_event_id",
        "max_lifetime",
        "method",
        "request",
        "response",
        "retry",
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
        super().__init__(serializer, sanitizer, max_queue, overflow)
        self.request: HttpRequest | None = request
        self.method = request.method if request is not None else "GET"
        self.state: dict[str, Any] = {} if state is None else state
        self.write_timeout = (
            app_settings.WRITE_TIMEOUT if isinstance(write_timeout, Unset) else write_timeout
        )
        self.max_lifetime = (
            app_settings.MAX_LIFETIME if isinstance(max_lifetime, Unset) else max_lifetime
        )
        self._deadline: float | None = None
        self.last_event_id = (
            client_event_id(request) if trust_client_event_id and request is not None else None
        )
        self.close_reason: str | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self._started = False
        self._last_write = 0.0
        self._sending_since: float | None = None
        self._task: asyncio.Task[Any] | None = None
        self._callback_task: asyncio.Task[None] | None = None
        self._start_callback: Callable[[Session], Awaitable[object]] | None = None
        #: The channels this session is registered on (kept by ``Channel.register`` and
        #: ``deregister``; it leaves them all when it ends).
        self.channels: set[Channel] | None = None
        #: Event types after which the stream ends (a generation's ``done`` and ``error``): the
        #: channel layer closes the session once it has queued one, live or replayed.
        self.ends_on: frozenset[str] = frozenset()
        #: Set by the channel layer while it replays history: live delivery then hands each
        #: ``(event id, frame, ends)`` to it instead of queueing it (``stream_app.replay``);
        #: ``ends`` says the event's type is one of ``ends_on``.
        self.hold: Callable[[str, bytes, bool], None] | None = None
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
        tracker = current_tracker()
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

    # -- ending --------------------------------------------------------------------------------

    def end_for_shutdown(self) -> None:
        """Tell the client to reconnect in a jittered while, then close (graceful shutdown)."""
        if self._closed:
            return
        self.put(tasks.retry_frame(), keep_alive=True)
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

    def tick(self, now: float) -> None:
        """One beat of the keep-alive timer (``stream_app.heartbeat``), at loop time ``now``:
        a keep-alive comment after ``keep_alive`` seconds of silence, the write timeout, the
        lifetime."""
        keep_alive = self.keep_alive
        if keep_alive is not None and now - self._last_write >= keep_alive:
            self.put(KEEP_ALIVE_FRAME, keep_alive=True)
        self._check_write_timeout(now)
        if self._deadline is not None and now >= self._deadline:
            self._deadline = None
            self.close_reason = "lifetime"
            self.close()

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
            heartbeat().discard(self)
        for future in (self._room, self._closed_waiter):
            if future is not None and not future.done():
                future.set_result(None)
        if self._callback_task is not None and not self._callback_task.done():
            self._callback_task.cancel()
        if self.channels:
            for channel in list(self.channels):
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
        heartbeat().add(self)
        if tasks.is_shutting_down():
            self.end_for_shutdown()
        if session_connected.receivers:
            session_connected.send(sender=Session, session=self)
        if self._start_callback is not None:
            self._run_callback(self._start_callback)

    def writer(self) -> AsyncIterator[bytes]:
        """The writer: the response body, one chunk per wake-up (iterated once, by the server)."""
        return self._chunks()

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
            drop_connection(send)
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
                self.put(error_frame(exc))
                self.close()
                return
            if not self.channels:
                self.close()

        self._callback_task = asyncio.ensure_future(run())
