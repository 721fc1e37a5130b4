"""Sessions: the public API of one client connection (``create_session``, ``Session``...).

The parts live in rooms of their own, re-exported here so that user imports keep working:
``session`` (the ``Session`` class: lifecycle and writer), ``outbox`` (its queue and
producers), ``encoding`` (JSON, frames, ``EventBuffer``), ``heartbeat`` (the keep-alive timer),
``lastevent`` (``Last-Event-ID`` parsing), ``stats``, ``tracking`` (sessions of one request) and
``streaming`` (the response class and headers).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from django.http import HttpRequest

from .encoding import EventBuffer, Serializer, error_frame
from .guards import require_asgi
from .outbox import Overflow, QueueFull
from .session import START_TIMEOUT, UNSET, Session, Unset
from .stats import live_sessions, stats
from .streaming import SSE_HEADERS, SessionResponse
from .tracking import RequestSessions, track_sessions

__all__ = [
    "SSE_HEADERS",
    "START_TIMEOUT",
    "UNSET",
    "EventBuffer",
    "QueueFull",
    "RequestSessions",
    "Serializer",
    "Session",
    "SessionResponse",
    "Unset",
    "create_response",
    "create_session",
    "error_frame",
    "live_sessions",
    "stats",
    "track_sessions",
]


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
