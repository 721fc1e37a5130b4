"""Notification endpoints: mark read, and a small demo page that shows the toast UI."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_safe

from ..models import Notification, NotificationRead
from ..permissions import csrf_passes
from ..requests import BodyError, parse_ids, read_json, require_json

__all__ = ["demo_view", "mark_read_view"]

MAX_IDS = 500
# 500 ids of up to 19 digits, with room for spaces.
MAX_BODY = 16_384


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


@csrf_exempt  # checked below, after the content type, so that the answer is always JSON
def mark_read_view(request: HttpRequest) -> HttpResponse:
    """POST ``{"ids": [1, 2]}`` (``Content-Type: application/json``): mark them read for the user.

    Needs a logged-in user and Django's CSRF token (the ``X-CSRFToken`` header). Answers
    ``{"read": [ids]}`` with the ids of sent notifications that are now read. Read
    notifications are no longer delivered on connect (until they are sent again). Errors are
    JSON: 405, 403 ``login_required`` / ``csrf_failed``, 415, 413, 400 ``invalid_json`` /
    ``invalid_ids`` (ids are positive integers, at most ``MAX_IDS`` of them).
    """
    if request.method != "POST":
        return _error(405, "method_not_allowed", "POST the ids to mark read")
    if not request.user.is_authenticated:
        return _error(403, "login_required", "log in to keep read notifications")
    try:
        # The content type first: the CSRF check would otherwise parse a form body.
        require_json(request)
        if not csrf_passes(request):
            return _error(403, "csrf_failed", "CSRF verification failed")
        body = read_json(request, max_bytes=MAX_BODY)
    except BodyError as exc:
        return exc.response()
    raw = body.get("ids") if isinstance(body, dict) else None
    if not isinstance(raw, list) or len(raw) > MAX_IDS:
        return _error(400, "invalid_ids", f"send 'ids': a list of up to {MAX_IDS} ids")
    try:
        ids = sorted(set(parse_ids(raw)))
    except ValueError as exc:
        return _error(400, "invalid_ids", f"ids are positive integers: {exc}")
    found = list(
        Notification.objects.filter(pk__in=ids, sent_at__isnull=False).values_list("pk", flat=True)
    )
    now = timezone.now()
    for pk in found:
        # update_or_create: reading again after a resend moves read_at past the new send.
        NotificationRead.objects.update_or_create(
            notification_id=pk, user=request.user, defaults={"read_at": now}
        )
    return JsonResponse({"read": found})


@require_safe  # a page: other methods get 405, not the page
def demo_view(request: HttpRequest) -> HttpResponse:
    """A minimal page that includes the notification UI (``{% notifications_ui %}``); GET only."""
    return render(request, "stream_app/notifications_demo.html")
