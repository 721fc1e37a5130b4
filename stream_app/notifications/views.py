"""Notification endpoints: mark read, and a small demo page that shows the toast UI."""

from __future__ import annotations

import json

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.utils import timezone
from django.views.decorators.http import require_POST

from ..models import Notification, NotificationRead

__all__ = ["demo_view", "mark_read_view"]

MAX_IDS = 500


def _error(status: int, code: str, message: str) -> JsonResponse:
    return JsonResponse({"error": code, "message": message}, status=status)


@require_POST
def mark_read_view(request: HttpRequest) -> HttpResponse:
    """POST ``{"ids": [1, 2]}`` (JSON, or form fields ``ids``): mark them read for the user.

    Needs a logged-in user and Django's CSRF token (the ``X-CSRFToken`` header). Answers
    ``{"read": [ids]}`` with the ids of sent notifications that are now read. Read
    notifications are no longer delivered on connect (until they are sent again).
    """
    if not request.user.is_authenticated:
        return _error(403, "login_required", "log in to keep read notifications")
    if request.content_type == "application/json":
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            return _error(400, "invalid_json", "body is not JSON")
        raw = body.get("ids") if isinstance(body, dict) else None
    else:
        raw = request.POST.getlist("ids")
    if not isinstance(raw, list) or len(raw) > MAX_IDS:
        return _error(400, "invalid_ids", f"send 'ids': a list of up to {MAX_IDS} ids")
    try:
        ids = sorted({int(value) for value in raw})
    except (TypeError, ValueError):
        return _error(400, "invalid_ids", "ids are integers")
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


def demo_view(request: HttpRequest) -> HttpResponse:
    """A minimal page that includes the notification UI (``{% notifications_ui %}``)."""
    return render(request, "stream_app/notifications_demo.html")
