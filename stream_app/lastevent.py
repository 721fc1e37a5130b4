"""The client's ``Last-Event-ID``: read from the request, checked, never repaired."""

from __future__ import annotations

import logging

from django.http import HttpRequest

__all__ = ["MAX_LAST_EVENT_ID", "client_event_id"]

logger = logging.getLogger("stream_app")

#: Longest ``Last-Event-ID`` accepted, in characters.
MAX_LAST_EVENT_ID = 256


def client_event_id(request: HttpRequest) -> str | None:
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
