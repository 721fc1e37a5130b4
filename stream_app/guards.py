"""ASGI guards: refuse a stream outside ASGI, and mark the views that open one.

Below sessions and the ASGI handler, so that both use them without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest

__all__ = [
    "ASGI_REQUIRED",
    "ENDPOINT_ATTRIBUTE",
    "StreamingRequiresASGI",
    "require_asgi",
    "stream_endpoint",
]

_View = TypeVar("_View", bound=Callable[..., Any])
#: The attribute ``stream_endpoint`` sets on a view (read by ``stream_app.asgi``).
ENDPOINT_ATTRIBUTE = "stream_app_endpoint"

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


def stream_endpoint(view: _View) -> _View:
    """Mark an async view that opens an event stream, for ``StreamASGIHandler``'s fast path.

    The handler then runs the project's middleware for it in one hop into the request's thread
    (see ``stream_app.asgi``). Harmless under any other handler.
    """
    setattr(view, ENDPOINT_ATTRIBUTE, True)
    return view
