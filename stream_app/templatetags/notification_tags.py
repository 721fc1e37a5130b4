"""``{% load notification_tags %}{% notifications_ui %}``: the toast and notification list UI.

The tag renders ``stream_app/notifications_ui.html``: the stylesheet, the script, a bell with the
unread count, the list panel and the toast area. The script opens one ``EventSource`` on the
stream endpoint for the notification channels this user may read (``NOTIFICATION_CHANNELS``
allowed by ``CAN_SUBSCRIBE``, plus ``user:<pk>``). A page that already has an ``EventSource``
passes ``connect=False`` and hands its source over: ``streamNotifications.attach(source)``,
the source being subscribed to ``data-channels``.

The user is the context's ``user`` (what Django's ``auth`` context processor puts there), else
``request.user``. An async view must put the user it awaited in the context
(``{"user": await request.auser()}``): reading ``request.user`` there would query the database
synchronously, which Django refuses with ``SynchronousOnlyOperation``.
"""

from __future__ import annotations

import inspect
from typing import Any

from django import template
from django.core.exceptions import SynchronousOnlyOperation
from django.middleware.csrf import get_token
from django.urls import NoReverseMatch, reverse
from django.utils.module_loading import import_string

from ..conf import app_settings
from ..permissions import can_subscribe

__all__ = ["notification_channels", "notifications_ui"]

register = template.Library()


def notification_channels(user: Any) -> list[str]:
    """The notification channels ``user`` may subscribe to, ``user:<pk>`` included."""
    hook = import_string(app_settings.CAN_SUBSCRIBE)
    names: list[str] = []
    for name in app_settings.NOTIFICATION_CHANNELS:
        allowed = hook(user, name)
        if inspect.isawaitable(allowed):
            # A template renders synchronously: judge an async hook's channel by the default
            # policy instead (the stream endpoint still applies the real hook).
            if inspect.iscoroutine(allowed):
                allowed.close()
            allowed = can_subscribe(user, name)
        if allowed:
            names.append(name)
    if user.is_authenticated:
        names.append(f"user:{user.pk}")
    return names


def _url(name: str, fallback: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return fallback


@register.inclusion_tag("stream_app/notifications_ui.html", takes_context=True)
def notifications_ui(
    context: template.Context, connect: bool = True, stream_url: str = ""
) -> dict[str, Any]:
    """The notification UI for the context's ``user`` (needs the ``request`` context processor)."""
    request = context["request"]
    user: Any = context.get("user", request.user)
    try:
        channels = notification_channels(user)
    except SynchronousOnlyOperation as exc:
        raise SynchronousOnlyOperation(
            "{% notifications_ui %} in an async view: put the user in the template context "
            '({"user": await request.auser()}) instead of letting it read request.user'
        ) from exc
    return {
        "channels": " ".join(channels),
        "stream_url": stream_url or _url("stream_app:stream", "/stream/"),
        "read_url": _url("stream_app:notifications_read", ""),
        "csrf_token": get_token(request),
        "authenticated": bool(user.is_authenticated),
        "connect": connect,
    }
