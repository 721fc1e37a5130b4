"""The admin: write notifications, send them ("Save and send", "Send selected"), see the trail.

Sending goes through the admin's own permission and CSRF checks: "Save and send" needs the add
(new) or change (existing) permission like any save, the action needs the change permission.
The send runs once the admin's transaction has committed, so that other workers can find the
row in the database as soon as clients can see the event. Each send leaves a
``NotificationSend`` row and an entry in the admin's history of the object.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.template.defaultfilters import pluralize
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.utils.html import format_html
from django.views.decorators.csrf import csrf_exempt

from .backends.base import BackendUnavailable
from .channels import ChannelNameError, get_channel, validate_channel_name
from .conf import app_settings
from .filters import FilterError
from .forms import NotificationForm
from .models import Notification, NotificationSend
from .notifications.sending import audience_filter, group_names, send_notification
from .requests import loads, parse_ids

__all__ = ["NotificationAdmin", "NotificationSendAdmin"]

if TYPE_CHECKING:
    _SendInline = admin.TabularInline[NotificationSend, Notification]
    _NotificationAdmin = admin.ModelAdmin[Notification]
    _SendAdmin = admin.ModelAdmin[NotificationSend]
else:
    # Django's classes are not subscriptable at run time (django-stubs' generics are typing-only).
    _SendInline = admin.TabularInline
    _NotificationAdmin = _SendAdmin = admin.ModelAdmin

_STATUS_COLORS: dict[str, str] = {
    Notification.Status.DRAFT: "#777",
    Notification.Status.SCHEDULED: "#d98a00",
    Notification.Status.SENT: "#2a8a3e",
    Notification.Status.EXPIRED: "#999",
}


class NotificationSendInline(_SendInline):
    """The sends of one notification, read-only."""

    model = NotificationSend
    extra = 0
    can_delete = False
    fields = ("sent_at", "sent_by_name", "via", "channel", "audience", "reach", "event_id")
    readonly_fields = fields
    verbose_name_plural = "sends (audit trail)"

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The trail is written by sends only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """The trail is never edited."""
        return False


@admin.register(Notification)
class NotificationAdmin(_NotificationAdmin):
    """Notifications: compose, schedule, send, resend; status and reach in the list."""

    form = NotificationForm
    list_display = (
        "title",
        "level",
        "channel",
        "audience",
        "status_column",
        "reach_column",
        "sent_at",
        "created_by",
    )
    list_filter = ("level", "audience", "channel")
    search_fields = ("title", "body")
    autocomplete_fields = ("users", "groups")
    readonly_fields = ("created_by", "created_at", "sent_at", "sent_by", "reach", "event_id")
    fieldsets = (
        (None, {"fields": ("title", "body", "body_format", "level", "link")}),
        ("Audience", {"fields": ("channel", "audience", "users", "groups", "state_filter")}),
        ("Timing", {"fields": ("send_at", "expires_at")}),
        (
            "Sending",
            {"fields": ("sent_at", "sent_by", "reach", "event_id", "created_by", "created_at")},
        ),
    )
    inlines = (NotificationSendInline,)
    actions = ("send_selected",)

    class Media:
        js = ("stream_app/notifications.admin.js",)

    # -- list -----------------------------------------------------------------------------------

    @admin.display(description="status")
    def status_column(self, obj: Notification) -> str:
        """Draft, scheduled, sent or expired, coloured."""
        status = obj.status
        return format_html(
            '<span class="sn-status sn-status-{}" style="color:{};font-weight:bold">{}</span>',
            status,
            _STATUS_COLORS[status],
            status,
        )

    @admin.display(description="reach", ordering="reach")
    def reach_column(self, obj: Notification) -> str:
        """Sessions the last send reached ("-" before any send)."""
        return "-" if obj.reach is None else str(obj.reach)

    # -- form -----------------------------------------------------------------------------------

    def get_changeform_initial_data(self, request: HttpRequest) -> dict[str, Any]:
        """Default the channel to the first of ``NOTIFICATION_CHANNELS``."""
        initial = super().get_changeform_initial_data(request)
        channels = app_settings.NOTIFICATION_CHANNELS
        if channels:
            initial.setdefault("channel", channels[0])
        return initial

    def save_model(self, request: HttpRequest, obj: Notification, form: Any, change: bool) -> None:
        """Record who created it."""
        if not change and request.user.is_authenticated:
            obj.created_by = request.user
        super().save_model(request, obj, form, change)

    def response_add(
        self, request: HttpRequest, obj: Notification, post_url_continue: str | None = None
    ) -> HttpResponse:
        """On "Save and send", send once saved, then show the form again."""
        if "_send" in request.POST:
            self._send_on_commit(request, obj, NotificationSend.Via.ADMIN)
            return HttpResponseRedirect(self._change_url(obj))
        return super().response_add(request, obj, post_url_continue)

    def response_change(self, request: HttpRequest, obj: Notification) -> HttpResponse:
        """On "Save and send (again)", send once saved, then show the form again."""
        if "_send" in request.POST:
            self._send_on_commit(request, obj, NotificationSend.Via.ADMIN)
            return HttpResponseRedirect(self._change_url(obj))
        return super().response_change(request, obj)

    def _change_url(self, obj: Notification) -> str:
        return reverse("admin:stream_app_notification_change", args=[obj.pk])

    def _send_on_commit(self, request: HttpRequest, obj: Notification, via: str) -> None:
        # Inside the admin's transaction: a worker that looks the row up on connect must see
        # it before any client can see the event.
        transaction.on_commit(lambda: self._send(request, obj, via))

    def _send(self, request: HttpRequest, obj: Notification, via: str) -> bool:
        if obj.status == Notification.Status.EXPIRED:
            self.message_user(request, f"“{obj}” has expired: not sent.", messages.WARNING)
            return False
        try:
            record = send_notification(obj, sent_by=request.user, via=via)
        except (BackendUnavailable, ValueError) as exc:
            self.message_user(request, f"“{obj}” was not sent: {exc}", messages.ERROR)
            return False
        assert record is not None
        if record.reach is None:
            reach = "an unknown number of connected sessions"
        else:
            reach = f"{record.reach} connected session{pluralize(record.reach)}"
        self.log_change(request, obj, f"Sent to {record.audience} ({reach}).")
        self.message_user(
            request, f"Sent “{obj}” to {reach} ({record.audience}).", messages.SUCCESS
        )
        return True

    # -- action ---------------------------------------------------------------------------------

    @admin.action(description="Send selected notifications", permissions=["change"])
    def send_selected(
        self, request: HttpRequest, queryset: QuerySet[Notification]
    ) -> HttpResponse | None:
        """Ask for confirmation (listing resends and expired ones), then send."""
        rows = list(queryset.order_by("pk"))
        if request.POST.get("post") == "yes":
            sent = sum(self._send(request, obj, NotificationSend.Via.ACTION) for obj in rows)
            if len(rows) > 1:
                self.message_user(request, f"Sent {sent} of {len(rows)} notifications.")
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Send notifications?",
            "opts": self.model._meta,
            "rows": [(obj, obj.status) for obj in rows],
            "action_checkbox_name": ACTION_CHECKBOX_NAME,
            "action_name": "send_selected",
            "resends": sum(1 for obj in rows if obj.sent_at is not None),
        }
        return TemplateResponse(
            request, "admin/stream_app/notification/send_selected_confirmation.html", context
        )

    # -- live count ------------------------------------------------------------------------------

    def get_urls(self) -> list[URLPattern]:
        """Add ``audience-count/``, polled by the change form."""
        view: Callable[..., HttpResponse] = self.admin_site.admin_view(self.audience_count_view)
        extra = [
            path("audience-count/", view, name="stream_app_notification_audience_count"),
        ]
        return extra + super().get_urls()

    @method_decorator(csrf_exempt)  # GET only: other methods get a JSON 405, not a CSRF page
    def audience_count_view(self, request: HttpRequest) -> JsonResponse:
        """GET ``?channel=&audience=&users=&groups=&state_filter=``: ``{"count": n}``.

        ``n`` is the connected sessions the audience matches on every worker (the backend
        asks each of them), for the form's current, possibly unsaved, values.
        """
        if request.method not in ("GET", "HEAD"):
            return JsonResponse(
                {"error": "method_not_allowed", "message": "GET the count"}, status=405
            )
        if not (self.has_add_permission(request) or self.has_change_permission(request)):
            return JsonResponse(
                {"error": "forbidden", "message": "notification permissions required"}, status=403
            )
        params = request.GET
        try:
            channel = validate_channel_name(params.get("channel", ""))
            raw_filter = params.get("state_filter", "").strip()
            spec = audience_filter(
                params.get("audience", Notification.Audience.EVERYONE),
                user_ids=parse_ids(v for v in params.getlist("users") if v),
                group_names=group_names(parse_ids(v for v in params.getlist("groups") if v)),
                # InvalidJSON is a ValueError: too deep, not finite, a lone surrogate...
                state_filter=loads(raw_filter) if raw_filter else None,
            )
        except (ChannelNameError, FilterError, ValueError) as exc:
            return JsonResponse({"error": "invalid", "message": str(exc)}, status=400)
        try:
            count = get_channel(channel).count(spec)
        except BackendUnavailable as exc:
            return JsonResponse({"error": "unavailable", "message": str(exc)}, status=503)
        return JsonResponse(
            {"count": count, "channel": channel, "filter": spec, "at": timezone.now().isoformat()}
        )


@admin.register(NotificationSend)
class NotificationSendAdmin(_SendAdmin):
    """The audit trail of every send: read-only."""

    list_display = ("title", "sent_at", "sent_by_name", "via", "channel", "audience", "reach")
    list_filter = ("via", "channel")
    search_fields = ("title", "sent_by_name", "audience")
    date_hierarchy = "sent_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Written by sends only."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never edited."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Never deleted from the admin."""
        return False
