"""Views: the subscribe endpoint (``stream_view``) and the HTTP publish endpoint.

``path("sse/", stream_view)`` subscribes the client to ``?channel=a&channel=b`` (or the URL
kwarg ``channel``) plus ``DEFAULT_CHANNELS``. Errors before the stream starts are JSON with an
HTTP status, never a silent empty stream:

- 400 ``invalid_channel``: a name outside ``[A-Za-z0-9_-.:@]{1,100}``;
- 400 ``too_many_channels``: more than ``MAX_CHANNELS_PER_STREAM`` ``?channel=`` names;
- 400 ``invalid_request``: more query fields than Django's ``DATA_UPLOAD_MAX_NUMBER_FIELDS``;
- 403 ``forbidden``: the ``CAN_SUBSCRIBE`` hook said no;
- 404 ``unknown_channel``: the hook knows no such channel, or no channel was asked for;
- 405 ``method_not_allowed``: anything but GET or HEAD;
- 429 ``too_many_connections``: the user has ``MAX_CONNECTIONS_PER_USER`` streams open here,
  or an anonymous client's address ``MAX_CONNECTIONS_PER_ADDRESS``;
- 500 ``asgi_required``: the project is served over WSGI, where nothing would stream.
"""

from __future__ import annotations

import ipaddress
from collections import Counter
from typing import Any

from django.core.exceptions import TooManyFieldsSent
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.utils.module_loading import import_string
from django.views.decorators.csrf import csrf_exempt

from .asgi import ASGI_REQUIRED, StreamingRequiresASGI, require_asgi, stream_endpoint
from .backends.base import BackendUnavailable
from .channels import (
    ChannelNameError,
    MessageTooLarge,
    get_channel,
    subscribe,
    validate_channel_name,
)
from .conf import app_settings
from .filters import FilterError
from .logout import end_on_logout
from .permissions import (
    PUBLISH,
    PUBLISH_ANY,
    bearer_matches,
    can_publish,
    check_subscribe,
    csrf_passes,
    session_state,
)
from .requests import BodyError, read_json
from .sessions import create_session

__all__ = ["client_address", "publish_view", "stream_view"]


# Open streams in this process per ("user", id) for MAX_CONNECTIONS_PER_USER and per
# ("address", address) for anonymous streams and MAX_CONNECTIONS_PER_ADDRESS.
_open_streams: Counter[tuple[str, Any]] = Counter()


def _release(key: tuple[str, Any]) -> None:
    _open_streams[key] -= 1
    if _open_streams[key] <= 0:
        del _open_streams[key]


def client_address(request: HttpRequest) -> str:
    """The client's address for per-address limits: an IPv6 address as its /64 network.

    From ``CLIENT_ADDRESS_HEADER`` (its last entry, the address the proxy saw) when set and
    present, else the connection's ``REMOTE_ADDR``.
    """
    address = ""
    header = app_settings.CLIENT_ADDRESS_HEADER
    if header:
        address = request.headers.get(header, "").rsplit(",", 1)[-1].strip()
    if not address:
        address = request.META.get("REMOTE_ADDR") or ""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        # Not an address (a proxy that sends a name or garbage): count it as it is, bounded.
        return address[:100]
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        # One client usually holds a whole /64 and can pick any address in it.
        return str(ipaddress.IPv6Network((parsed, 64), strict=False))
    return str(parsed)


def error(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    """A JSON error response: ``{"error": code, "message": message, ...}``."""
    return JsonResponse({"error": code, "message": message, **extra}, status=status)


@stream_endpoint
@csrf_exempt  # it changes nothing and takes GET only: a POST gets a JSON 405, not a CSRF page
async def stream_view(request: HttpRequest, channel: str | None = None) -> HttpResponseBase:
    """Stream the channels the client asks for, after checking each one."""
    if request.method not in ("GET", "HEAD"):
        return error(405, "method_not_allowed", "GET the stream (EventSource)")
    try:
        require_asgi(request)
    except StreamingRequiresASGI:
        return error(500, "asgi_required", ASGI_REQUIRED)
    try:
        names = request.GET.getlist("channel") or ([channel] if channel else [])
    except TooManyFieldsSent as exc:
        return error(400, "invalid_request", str(exc))
    most = app_settings.MAX_CHANNELS_PER_STREAM
    if len(names) > most:
        # Before anything else: each name costs a permission check, a subscription and a replay.
        return error(400, "too_many_channels", f"at most {most} channels per stream")
    names = list(dict.fromkeys([*names, *app_settings.DEFAULT_CHANNELS]))
    if not names:
        return error(404, "unknown_channel", "no channel asked for: add ?channel=<name>")
    user = await request.auser()
    for name in names:
        try:
            validate_channel_name(name)
        except ChannelNameError as exc:
            return error(400, "invalid_channel", str(exc))
        allowed = await check_subscribe(user, name)
        if allowed is None:
            return error(404, "unknown_channel", f"no channel {name!r}", channel=name)
        if not allowed:
            return error(403, "forbidden", f"not allowed to subscribe to {name!r}", channel=name)
    state = await session_state(request, user)
    user_id = state["user_id"]
    if user_id is not None:
        key, cap, per = ("user", user_id), app_settings.MAX_CONNECTIONS_PER_USER, "user"
    else:
        key = ("address", client_address(request))
        cap, per = app_settings.MAX_CONNECTIONS_PER_ADDRESS, "client address"
    if cap is not None and _open_streams[key] >= cap:
        return error(429, "too_many_connections", f"at most {cap} open streams per {per}")
    session = await create_session(request, state=state)
    if cap is not None:
        _open_streams[key] += 1
        session.on_close(lambda s: _release(key))
    if request.method != "HEAD":

        async def connected() -> None:
            # Connect hooks push what the session should get first (missed notifications),
            # after the replayed history and before live events.
            for hook in app_settings.CONNECT_HOOKS:
                await import_string(hook)(session, names)
            # Tell the client it is subscribed (EventSource ignores it unless it listens).
            await session.send({"channels": names}, "ready")

        try:
            # Logging out of this Django session ends the stream, on any worker.
            await end_on_logout(request, user, session)
            await subscribe(session, [get_channel(name) for name in names], then=connected)
        except BaseException:
            # The client left (CancelledError) or a hook failed: this session never streams.
            session.abandon()
            raise
    return session.response


@csrf_exempt
async def publish_view(request: HttpRequest) -> HttpResponse:
    """POST ``{"channel", "data", "event"?, "filter"?}``: broadcast; answers ``{"id": ...}``.

    Allowed on every channel to holders of ``PUBLISH_TOKEN`` (``Authorization: Bearer
    <token>``, a service credential); to sessions of users with the permission
    ``stream_app.publish`` (channels everyone may read) or ``stream_app.publish_any`` (every
    channel), whose requests must then pass Django's CSRF check like any form.
    """
    if request.method != "POST":
        return error(405, "method_not_allowed", "POST a JSON object")
    user = None
    if not bearer_matches(request, app_settings.PUBLISH_TOKEN):
        user = await request.auser()
        if not await can_publish(user):
            return error(
                403,
                "forbidden",
                f"the permission {PUBLISH} (public channels) or {PUBLISH_ANY}, "
                "or the publish token, is required",
            )
        # publish_view itself is csrf_exempt (token callers have no cookie): sessions must
        # pass the check like any form.
        if not csrf_passes(request):
            return error(403, "csrf_failed", "CSRF verification failed")
    try:
        body = read_json(request, max_bytes=app_settings.MAX_MESSAGE_BYTES + 4096)
    except BodyError as exc:
        return exc.response()
    if not isinstance(body, dict) or "channel" not in body or "data" not in body:
        return error(400, "invalid_request", "send an object with 'channel' and 'data'")
    unknown = set(body) - {"channel", "data", "event", "filter"}
    if unknown:
        return error(400, "invalid_request", f"unknown fields: {', '.join(sorted(unknown))}")
    event = body.get("event")
    if event is not None and not isinstance(event, str):
        return error(400, "invalid_event", "'event' must be a string")
    try:
        channel = get_channel(validate_channel_name(body["channel"]))
    except ChannelNameError as exc:
        return error(400, "invalid_channel", str(exc))
    if user is not None and not await can_publish(user, channel.name):
        return error(
            403,
            "forbidden",
            f"publishing to {channel.name!r} needs the permission {PUBLISH_ANY}",
            channel=channel.name,
        )
    try:
        event_id = await channel.abroadcast(body["data"], event, filter=body.get("filter"))
    except FilterError as exc:
        return error(400, "invalid_filter", str(exc))
    except MessageTooLarge as exc:
        return error(413, "too_large", str(exc))
    except ValueError as exc:
        return error(400, "invalid_event", str(exc))
    except BackendUnavailable as exc:
        return error(503, "backend_unavailable", str(exc))
    return JsonResponse({"id": event_id, "channel": channel.name}, status=201)
