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
"""

from __future__ import annotations

import contextvars
from typing import Any

import django
from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIHandler, ASGIRequest
from django.core.handlers.exception import response_for_exception
from django.http import HttpRequest, HttpResponseBase

from .conf import app_settings
from .lifecycle import install_signal_handlers

__all__ = ["StreamASGIHandler", "StreamingRequiresASGI", "get_asgi_application", "require_asgi"]


class _Slot:
    """Per-request hand-off state, shared with Django's request task through a context var."""

    __slots__ = ("method", "request", "session")

    def __init__(self, method: str) -> None:
        self.method = method
        self.request: HttpRequest | None = None
        self.session: Any = None


_handoff: contextvars.ContextVar[_Slot] = contextvars.ContextVar("stream_app_handoff")

ASGI_REQUIRED = (
    "Server-sent events need an ASGI server: under WSGI (plain runserver, gunicorn sync workers) "
    "a stream is collected whole and never sent. Run the project with daphne or uvicorn "
    "(add 'daphne' to INSTALLED_APPS for runserver)."
)


class StreamingRequiresASGI(ImproperlyConfigured):
    """A stream was requested from a view served over WSGI."""


def require_asgi(request: HttpRequest) -> None:
    """Raise StreamingRequiresASGI unless ``request`` came through an ASGI handler."""
    if not isinstance(request, ASGIRequest):
        raise StreamingRequiresASGI(ASGI_REQUIRED)


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

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            from .lifecycle import serve_lifespan

            await serve_lifespan(receive, send)
            return
        install_signal_handlers()
        slot = _Slot(scope.get("method", "GET"))
        token = _handoff.set(slot)
        try:
            await super().__call__(scope, receive, send)
        finally:
            _handoff.reset(token)
        if slot.session is not None:
            session, slot.session, slot.request = slot.session, None, None
            await session.run_asgi(send, receive)

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
        if session.method == "HEAD" or session.is_closed:
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
