"""HTTP side of generations: stream one as it starts, resume it anywhere, cancel it.

Mount with ``path("chat/", include("stream_app.llm.urls"))``:

- ``GET generations/<id>/stream/``: the generation's events, replayed after ``Last-Event-ID``
  (header or ``?lastEventId=``) or from its start without one, then live until ``done`` or
  ``error``. A generation whose worker died is taken over here first when it can be
  (``stream_app.llm.takeover``). ``204`` when the generation is unknown, expired, not the
  requester's, orphaned for good (its worker died and it cannot be rerun), or finished and
  already fully seen: ``EventSource`` stops reconnecting.
- ``POST generations/<id>/cancel/`` (CSRF protected): ``202`` once asked; ``404`` unknown (or
  someone else's); ``409`` already finished (or orphaned for good); ``403`` ``csrf_failed``.

Other methods get a JSON ``405``; neither view reads a request body.

The view that starts a generation is the project's (it decides the prompt and what to save);
it ends with ``return await stream_generation(request, generation, stream_chat(...))``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from django.urls import NoReverseMatch, reverse
from django.views.decorators.csrf import csrf_exempt

from ..asgi import ASGI_REQUIRED, StreamingRequiresASGI, require_asgi, stream_endpoint
from ..backends import get_backend
from ..backends.base import BackendUnavailable, id_key
from ..channels import get_channel, subscribe
from ..permissions import csrf_passes
from ..sessions import Session
from .events import TERMINAL_EVENTS, LLMEvent, RawChunk
from .generations import (
    Generation,
    channel_name,
    get_local,
    lookup,
    owner_digest,
    wait_for_listener,
)
from .takeover import follow, take_over

__all__ = [
    "GenerationSession",
    "generation_cancel_view",
    "generation_stream_view",
    "generation_urls",
    "request_owner",
    "stream_generation",
]

_SESSION_FLAG = "stream_app_llm"


class GenerationSession(Session):
    """A session that ends after a generation's ``done`` or ``error`` event.

    The end can arrive live, from another worker, or in replayed history: the channel layer
    sees it by the event's type (``Session.ends_on``), never by its bytes.
    """

    __slots__ = ()

    def __init__(self, request: HttpRequest | None, **options: Any) -> None:
        super().__init__(request, **options)
        self.ends_on = TERMINAL_EVENTS


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


async def request_owner(request: HttpRequest, *, create: bool = False) -> str | None:
    """The owner digest of the request's user, or of its session for anonymous users.

    With ``create`` an anonymous visitor without a session gets one (its cookie is set on the
    response), so the generation it starts stays readable by it alone.
    """
    user = await request.auser()
    if user.is_authenticated:
        return owner_digest(f"user:{user.pk}")
    session = getattr(request, "session", None)
    if session is None:
        return None
    if not session.session_key:
        if not create:
            return None
        # Marking the session modified makes SessionMiddleware send its cookie.
        await session.aset(_SESSION_FLAG, True)
        await session.asave()
    return owner_digest(f"session:{session.session_key}")


def generation_urls(generation_id: str) -> dict[str, str | None]:
    """``stream_url`` and ``cancel_url`` of a generation, if ``stream_app.llm.urls`` is mounted."""
    urls: dict[str, str | None] = {}
    for key, name in (("stream_url", "generation-stream"), ("cancel_url", "generation-cancel")):
        try:
            urls[key] = reverse(f"stream_llm:{name}", args=[generation_id])
        except NoReverseMatch:
            urls[key] = None
    return urls


def _session(request: HttpRequest, owner: str, **options: Any) -> GenerationSession:
    require_asgi(request)
    return GenerationSession(request, state={"owner": owner}, **options)


async def stream_generation(
    request: HttpRequest,
    generation: Generation,
    source: AsyncIterator[LLMEvent | RawChunk],
    **session_options: Any,
) -> HttpResponseBase:
    """Start ``generation`` on ``source`` and return the response that streams it.

    The response's session joins the generation's channel before the producer publishes
    anything, so it receives every event; when the client leaves, the generation goes on
    (for ``GENERATION_GRACE`` seconds without any listener) and can be resumed.
    """
    for key, value in generation_urls(generation.id).items():
        generation.metadata.setdefault(key, value)
    session = _session(request, generation.owner, trust_client_event_id=False, **session_options)
    channel = generation.channel
    backend = get_backend()
    backend.subscribe(channel.name)
    await wait_for_listener(backend)
    await subscribe(session, [channel])
    generation.start(source)
    return session.response


@stream_endpoint
@csrf_exempt  # it changes nothing and takes GET only: a POST gets a JSON 405, not a CSRF page
async def generation_stream_view(request: HttpRequest, generation_id: str) -> HttpResponseBase:
    """Replay and follow a generation (see the module docstring)."""
    if request.method not in ("GET", "HEAD"):
        return _error(405, "method_not_allowed", "GET the generation's stream")
    try:
        require_asgi(request)
    except StreamingRequiresASGI:
        return _error(500, "asgi_required", ASGI_REQUIRED)
    owner = await request_owner(request)
    if owner is None or len(generation_id) != 32:
        return HttpResponse(status=204)
    try:
        info = await lookup(generation_id)
        if info is not None and info.owner == owner and info.orphaned:
            info = await take_over(info) or info
    except BackendUnavailable as exc:
        return _error(503, "backend_unavailable", str(exc))
    if info is None or info.owner != owner or info.orphaned:
        # Someone else's generation looks exactly like an unknown one; an orphaned one will
        # never end, so the client is told to stop waiting.
        return HttpResponse(status=204)
    session = _session(request, owner)
    after = session.last_event_id
    backend = get_backend()
    if after is not None and not backend.valid_id(after):
        after = None
    if info.finished:
        assert info.terminal_id is not None
        if after is not None and (id_key(after) or (0,)) >= (id_key(info.terminal_id) or (0,)):
            return HttpResponse(status=204)
    if request.method == "HEAD":
        return session.response
    # The one replay path, from the client's id or from the generation's start; a finished
    # generation ends the session with its terminal event, as a live one does.
    session.last_event_id = after
    name = channel_name(generation_id)
    if not info.finished:
        backend.subscribe(name)
        await wait_for_listener(backend)
    await subscribe(session, [get_channel(name)], from_start=after is None)
    if not info.finished and get_local(generation_id) is None:
        follow(generation_id)
    return session.response


@csrf_exempt  # checked below, so that a refusal is JSON whatever the project's CSRF_FAILURE_VIEW
async def generation_cancel_view(request: HttpRequest, generation_id: str) -> HttpResponseBase:
    """Cancel a generation (see the module docstring)."""
    if request.method != "POST":
        return _error(405, "method_not_allowed", "POST to cancel a generation")
    if not csrf_passes(request):
        return _error(403, "csrf_failed", "CSRF verification failed")
    owner = await request_owner(request)
    unknown = _error(404, "unknown_generation", "no such generation")
    if owner is None or len(generation_id) != 32:
        return unknown
    local = get_local(generation_id)
    if local is not None:
        if local.owner != owner:
            return unknown
        if not local.cancel("user"):
            return _error(409, "already_finished", "the generation has finished")
        return JsonResponse({"status": "cancelling"}, status=202)
    try:
        info = await lookup(generation_id)
        if info is None or info.owner != owner:
            return unknown
        if info.orphaned:
            # Taken over here, it is cancelled here: it ends with the text it had.
            info = await take_over(info) or info
            local = get_local(generation_id)
            if local is not None and local.cancel("user"):
                return JsonResponse({"status": "cancelling"}, status=202)
        if info.finished or info.orphaned:
            return _error(409, "already_finished", "the generation has finished")
        # The producer runs on another worker: its observer of the channel hears this event.
        await get_channel(channel_name(generation_id)).abroadcast(
            {"reason": "user"}, "cancel", filter={"owner": owner}
        )
    except BackendUnavailable as exc:
        return _error(503, "backend_unavailable", str(exc))
    return JsonResponse({"status": "cancelling"}, status=202)
