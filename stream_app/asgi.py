"""The ASGI entry point that streams sessions outside Django's per-request thread.

Django runs each request inside asgiref's ``ThreadSensitiveContext``: the sync receivers of
``request_started`` get a thread of their own, and that thread lives until the response ends.
For a stream that stays open for hours this is one idle OS thread per client (about 48 KB).

``StreamASGIHandler`` lets Django handle the request exactly as usual (middleware,
authentication, sessions, the view, ``request_finished``), sends the response headers, and only
then, once the per-request context has been left and its thread released, streams the session's
events to the client. The trade-off: ``request_finished`` fires when the stream *starts*, so
database connections are released then (what a stream wants), and code that runs later in the
stream should use the async ORM like any other background task.

Use it in ``asgi.py``::

    from stream_app.asgi import get_asgi_application
    application = get_asgi_application()

With Django's own ``get_asgi_application()`` sessions still work; they just keep the thread.

Two more things make opening a stream cheap (a reconnect storm after a restart is thousands of
them a second) while Django does the same things for the request:

- Each request's thread for Django's thread-sensitive code is lent from a pool
  (``stream_app.threads``) instead of being started and joined per request.
- For views marked with ``@stream_endpoint`` (``stream_view`` and the generation stream view
  are), ``request_started``, the middleware chain and the view run in **one** hop into that
  thread: the chain in Django's synchronous mode, as under WSGI, and the async view awaited on
  the event loop from there (``async_to_sync``, whose sync calls come back to the same thread).
  For a session about to be handed off, ``response.close()`` (``request_finished``) runs in that
  hop too, just before the headers are sent. Django's asynchronous chain hops into the thread
  and back twice per ``MiddlewareMixin`` middleware (fourteen times for the default seven),
  plus once per request signal, at ~50-100 us each. The same middleware run in the same order
  on the same thread; only async-only middleware are adapted the other way. Tasks the view
  starts that call thread-sensitive code after it returned run that code on one process-wide
  thread (``stream_app-leftover``). Every other view goes through Django's handler unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from concurrent.futures import Future
from typing import Any

import django
from asgiref.current_thread_executor import CurrentThreadExecutor
from asgiref.sync import AsyncToSync, sync_to_async
from django.core import signals
from django.core.exceptions import RequestAborted
from django.core.handlers.asgi import ASGIHandler, get_script_prefix
from django.core.handlers.base import BaseHandler
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponseBase
from django.urls import get_resolver, set_script_prefix

from .backends.memory import mark_serving
from .conf import app_settings
from .guards import (
    ASGI_REQUIRED,
    ENDPOINT_ATTRIBUTE,
    StreamingRequiresASGI,
    require_asgi,
    stream_endpoint,
)
from .lifecycle import install_signal_handlers
from .sessions import track_sessions
from .threads import RequestThreadContext

__all__ = [
    "ASGI_REQUIRED",
    "StreamASGIHandler",
    "StreamingRequiresASGI",
    "get_asgi_application",
    "require_asgi",
    "stream_endpoint",
]


def _path_info(scope: Any) -> str:
    path: str = scope.get("path", "")
    prefix = get_script_prefix(scope).rstrip("/")
    return path[len(prefix) :] if prefix and path.startswith(prefix + "/") else path


def _opens_stream(path_info: str) -> bool:
    try:
        match = get_resolver().resolve(path_info)
    except Exception:
        # Django's own resolution answers this request (a 404, or the error it reports).
        return False
    return getattr(match.func, ENDPOINT_ATTRIBUTE, False) is True


class _LeftoverCalls:
    """A thread serving thread-sensitive calls of tasks that outlived their stream view.

    ``async_to_sync`` runs the view with the request thread as its executor for sync code;
    when the view returns that executor is finished, and tasks the view started (an LLM
    generation's producer, say) fall back to the executor that was current before, this one.
    Without it their next ``sync_to_async`` call would raise.
    """

    _executor: CurrentThreadExecutor | None = None
    _lock = threading.Lock()

    @classmethod
    def executor(cls) -> CurrentThreadExecutor:
        with cls._lock:
            if cls._executor is None:
                ready: Future[CurrentThreadExecutor] = Future()
                threading.Thread(
                    target=cls._serve, args=(ready,), name="stream_app-leftover", daemon=True
                ).start()
                cls._executor = ready.result()
            return cls._executor

    @staticmethod
    def _serve(ready: Future[CurrentThreadExecutor]) -> None:
        executor = CurrentThreadExecutor(None)
        ready.set_result(executor)
        # A future nobody completes: serve calls for the life of the process.
        executor.run_until_future(Future())


class _OneHopHandler(BaseHandler):
    """Django's middleware chain in synchronous mode, for stream endpoints."""

    def __init__(self, handler_class: type[ASGIHandler]) -> None:
        super().__init__()
        self.handler_class = handler_class
        self.load_middleware(is_async=False)

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        """Django's synchronous ``get_response``, in the request thread."""
        # asgiref has no public way to pick where thread-sensitive calls go once the view's
        # async_to_sync has finished: its private ``executors.current`` (tests/test_internals.py).
        previous = getattr(AsyncToSync.executors, "current", None)
        AsyncToSync.executors.current = _LeftoverCalls.executor()
        try:
            return super().get_response(request)
        finally:
            # Context changes made here flow back to the handler's task: undo this one.
            AsyncToSync.executors.current = previous

    def respond(
        self, handler: StreamASGIHandler, scope: Any, body_file: Any
    ) -> tuple[HttpResponseBase, bool]:
        """Everything up to sending the response, in one hop into the request thread.

        ``request_started``, the request, the middleware and the view, as Django's handler does
        them; for a session about to be handed off also ``response.close()`` (so
        ``request_finished``), which Django would do after the last byte. Returns the response
        and whether it is closed already.
        """
        signals.request_started.send(sender=self.handler_class, scope=scope)
        request, error_response = handler.create_request(scope, body_file)
        if request is None:
            return error_response, False
        response = self.get_response(request)
        response._handler_class = self.handler_class  # type: ignore[attr-defined]
        if _hands_off(response, scope.get("method")):
            response.close()
            return response, True
        return response, False


def _hands_off(response: HttpResponseBase, method: str | None, *, prefetched: bool = False) -> bool:
    """Whether ``send_response`` sends only the headers and hands the session over.

    ``prefetched``: a response's ``prefetch`` has already run (only ``send_response`` runs it).
    """
    from .sessions import SessionResponse

    return (
        isinstance(response, SessionResponse)
        and app_settings.HANDOFF
        and method != "HEAD"
        and response.session.method != "HEAD"
        and (prefetched or getattr(response, "prefetch", None) is None)
        and not response.session.is_closed
    )


class _Slot:
    """Per-request hand-off state, shared with Django's request task through a context var."""

    __slots__ = ("disconnected", "method", "request", "session")

    def __init__(self, method: str) -> None:
        self.method = method
        self.request: HttpRequest | None = None
        self.session: Any = None
        self.disconnected = False


_handoff: contextvars.ContextVar[_Slot] = contextvars.ContextVar("stream_app_handoff")


def _response_headers(response: HttpResponseBase) -> list[tuple[bytes, bytes]]:
    # As Django's ASGIHandler.send_response: keep header case, add cookies.
    headers = [
        (
            header.encode("ascii") if isinstance(header, str) else bytes(header),
            value.encode("latin1") if isinstance(value, str) else bytes(value),
        )
        for header, value in response.items()
    ]
    headers.extend(
        (b"Set-Cookie", cookie.output(header="").encode("ascii").strip())
        for cookie in response.cookies.values()
    )
    return headers


class StreamASGIHandler(ASGIHandler):
    """Django's ASGI handler, streaming sessions after the per-request context has ended."""

    def __init__(self) -> None:
        super().__init__()
        self._one_hop = _OneHopHandler(type(self))
        # This process serves streams: the memory backend may publish here.
        mark_serving()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            from .lifecycle import serve_lifespan

            await serve_lifespan(receive, send)
            return
        if scope["type"] != "http":
            # As Django's handler.
            raise ValueError(f"Django can only handle ASGI/HTTP connections, not {scope['type']}.")
        install_signal_handlers()
        slot = _Slot(scope.get("method", "GET"))

        async def watched_receive() -> Any:
            message = await receive()
            if message["type"] == "http.disconnect":
                slot.disconnected = True
            return message

        token = _handoff.set(slot)
        handed_off = None
        with track_sessions() as created:
            try:
                async with RequestThreadContext():
                    await self.handle(scope, watched_receive, send)
                # A disconnect taken by Django's listener as the view returned is the only one
                # the server sends: a stream started now would wait for it forever.
                if not slot.disconnected:
                    handed_off = slot.session
            finally:
                _handoff.reset(token)
                # Every other session this request created will never stream (the client left
                # while the view ran, the view failed, or another response was sent): end it,
                # and any the view's thread still creates once the client has gone.
                created.end(keep=handed_off)
        if handed_off is not None:
            slot.session = slot.request = None
            await handed_off.run_asgi(send, receive)

    async def handle(self, scope: Any, receive: Any, send: Any) -> None:
        """Django's ``handle``; for stream endpoints with the request's sync work in one hop.

        The stream-endpoint branch is a fork of Django's ``ASGIHandler.handle``:
        tests/test_internals.py fails when a Django release changes the upstream method.
        """
        if not _opens_stream(_path_info(scope)):
            await super().handle(scope, receive, send)
            return
        try:
            body_file = await self.read_body(receive)
        except RequestAborted:
            return
        try:
            set_script_prefix(get_script_prefix(scope))
            respond = sync_to_async(self._one_hop.respond, thread_sensitive=True)
            listener = asyncio.ensure_future(self.listen_for_disconnect(receive))
            responding = asyncio.ensure_future(respond(self, scope, body_file))
            try:
                await asyncio.wait((listener, responding), return_when=asyncio.FIRST_COMPLETED)
                if not responding.done():
                    # As Django's handler: the client left, let the view handle cancellation.
                    responding.cancel()
                try:
                    response, closed = await responding
                except asyncio.CancelledError:
                    await signals.request_finished.asend(sender=type(self))
                    return
            finally:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, RequestAborted):
                    await listener
            with contextlib.suppress(asyncio.CancelledError):
                # Cancelled: the client left while we were sending, as in Django's handler.
                await self.send_response(response, send)
            if not closed:
                await sync_to_async(response.close)()
        finally:
            body_file.close()

    def create_request(self, scope: Any, body_file: Any) -> Any:
        """Django's request, remembered for error responses raised while preparing a stream."""
        request, error_response = super().create_request(scope, body_file)
        slot = _handoff.get(None)
        if slot is not None:
            slot.request = request
        return request, error_response

    async def send_response(self, response: HttpResponseBase, send: Any) -> None:
        """Send headers and hand the session over, or send the response as Django does."""
        from .sessions import SessionResponse

        slot = _handoff.get(None)
        if slot is None or not isinstance(response, SessionResponse) or not app_settings.HANDOFF:
            await super().send_response(response, send)
            return
        session = response.session
        if slot.method == "HEAD":
            session.method = "HEAD"
        prefetch = getattr(response, "prefetch", None)
        if prefetch is not None and session.method != "HEAD":
            try:
                await prefetch()
            except Exception as exc:
                # Nothing is sent yet: answer like any failing view.
                if slot.request is None:
                    raise
                error_response = await sync_to_async(response_for_exception)(slot.request, exc)
                await super().send_response(error_response, send)
                session._abort("error")
                return
        if not _hands_off(response, slot.method, prefetched=True):
            await super().send_response(response, send)
            return
        await send(
            {
                "type": "http.response.start",
                "status": response.status_code,
                "headers": _response_headers(response),
            }
        )
        slot.session = session


def get_asgi_application() -> StreamASGIHandler:
    """Set Django up and return the streaming ASGI handler (the ``asgi.py`` entry point)."""
    django.setup(set_prefix=False)
    return StreamASGIHandler()
