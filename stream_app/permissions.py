"""Who may subscribe to and publish on which channel, and what a session's state holds.

``STREAM_APP["CAN_SUBSCRIBE"]`` names a function ``(user, channel) -> bool | None`` (it may be
async): True allows, False forbids (403), None means there is no such channel (404). The
default allows the channels listed in ``PUBLIC_CHANNELS`` to everyone, ``user:<pk>`` to that user
only, ``staff`` to staff users, and knows no other channel.

Publishing from a logged-in session (``POST stream/publish/``) takes a permission:
``stream_app.publish`` for the channels everyone may read (``PUBLIC_CHANNELS`` and
``DEFAULT_CHANNELS``), ``stream_app.publish_any`` for every channel. ``is_staff`` alone allows
nothing: a publisher reaches other users' browsers, which is more than logging into the admin.
"""

from __future__ import annotations

import hmac
import inspect
from typing import Any

from asgiref.sync import sync_to_async
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import HttpRequest, HttpResponse
from django.http.multipartparser import MultiPartParserError
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.module_loading import import_string

from .conf import app_settings

__all__ = [
    "INTERNAL_CHANNEL_PREFIX",
    "PUBLISH",
    "PUBLISH_ANY",
    "bearer_matches",
    "can_publish",
    "can_subscribe",
    "check_subscribe",
    "csrf_passes",
    "session_state",
]

#: Channels that carry stream_app's messages between workers, never to clients.
INTERNAL_CHANNEL_PREFIX = "stream_app."
#: Publish on the channels everyone may read.
PUBLISH = "stream_app.publish"
#: Publish on every channel, ``user:<pk>`` and ``staff`` included.
PUBLISH_ANY = "stream_app.publish_any"


def bearer_matches(request: HttpRequest, token: object) -> bool:
    """Whether the request carries ``Authorization: Bearer <token>`` (never, if token is unset).

    Compared in constant time, so the token cannot be guessed a character at a time.
    """
    header = request.headers.get("Authorization", "")
    if not token or not header.startswith("Bearer "):
        return False
    return hmac.compare_digest(header[7:].encode(), str(token).encode())


def _csrf_protected(request: HttpRequest) -> HttpResponse:
    """Stands for a view without csrf_exempt in ``csrf_passes``."""
    return HttpResponse()


def csrf_passes(request: HttpRequest) -> bool:
    """Django's CSRF check, for a csrf_exempt view that also takes bearer-token callers.

    The check runs against a stand-in view: ``process_view`` skips csrf_exempt views entirely.
    It reads the form field ``csrfmiddlewaretoken`` first; a form body it cannot parse (a
    garbled multipart, too many fields, too large) fails the check instead of raising, so the
    caller answers its JSON 403 rather than Django's HTML 400.
    """
    middleware = CsrfViewMiddleware(_csrf_protected)
    try:
        return middleware.process_view(request, _csrf_protected, (), {}) is None
    except (MultiPartParserError, RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent):
        return False


def _publish_allowed(user: Any, channel: str | None) -> bool:
    if not user.is_authenticated:
        return False
    if user.has_perm(PUBLISH_ANY):
        return True
    public = channel is None or (
        channel in app_settings.PUBLIC_CHANNELS or channel in app_settings.DEFAULT_CHANNELS
    )
    return public and bool(user.has_perm(PUBLISH))


async def can_publish(user: Any, channel: str | None = None) -> bool:
    """Whether ``user`` may publish on ``channel`` (None: on some channel) through a session.

    Through ``has_perm`` in a thread, so any user model and authentication backend works.
    """
    return await sync_to_async(_publish_allowed)(user, channel)


def can_subscribe(user: Any, channel: str) -> bool | None:
    """The default policy (see the module docstring)."""
    if channel in app_settings.PUBLIC_CHANNELS or channel in app_settings.DEFAULT_CHANNELS:
        return True
    if channel.startswith("user:"):
        return bool(user.is_authenticated and channel == f"user:{user.pk}")
    if channel == "staff":
        return bool(user.is_authenticated and user.is_staff)
    return None


async def check_subscribe(user: Any, channel: str) -> bool | None:
    """Run the configured ``CAN_SUBSCRIBE`` hook, sync or async.

    ``stream_app.*`` channels are internal (``stream_app.logout``): unknown to every client,
    whatever the hook says.
    """
    if channel.startswith(INTERNAL_CHANNEL_PREFIX):
        return None
    hook = import_string(app_settings.CAN_SUBSCRIBE)
    result = hook(user, channel)
    if inspect.isawaitable(result):
        result = await result
    return None if result is None else bool(result)


async def session_state(request: HttpRequest, user: Any) -> dict[str, Any]:
    """The state a stream's session starts with, taken from the request's user.

    ``user_id``, ``username``, ``is_authenticated``, ``is_anonymous``, ``is_staff``,
    ``is_superuser`` and ``groups`` (names), then whatever the ``SESSION_STATE`` hook adds.
    """
    state: dict[str, Any] = {
        "user_id": user.pk if user.is_authenticated else None,
        "username": user.get_username() if user.is_authenticated else "",
        "is_authenticated": bool(user.is_authenticated),
        "is_anonymous": bool(user.is_anonymous),
        "is_staff": bool(getattr(user, "is_staff", False)),
        "is_superuser": bool(getattr(user, "is_superuser", False)),
        "groups": [],
    }
    if user.is_authenticated and hasattr(user, "groups"):
        state["groups"] = [name async for name in user.groups.values_list("name", flat=True)]
    if app_settings.SESSION_STATE:
        hook = import_string(app_settings.SESSION_STATE)
        result = hook(request, state)
        if inspect.isawaitable(result):
            await result
    return state
