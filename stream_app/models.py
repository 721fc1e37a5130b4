"""Models: broadcast notifications written in the admin, their audit trail and read receipts.

``Publishing`` has no table: it carries the permissions of the publish endpoint.

A ``Notification`` is written once and sent on a channel as the SSE event ``notification``;
every worker filters it per session by the audience (the same filter data as any broadcast).
``NotificationSend`` records each send (who, when, to whom, how many sessions it reached) and
outlives the notification it describes. ``NotificationRead`` is one user's "I have seen it".
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.utils import timezone

from .channels import ChannelNameError, validate_channel_name
from .notifications.markup import check_link

__all__ = ["Notification", "NotificationRead", "NotificationSend", "Publishing"]


def validate_channel(value: str) -> None:
    """Model validator: a valid channel name."""
    try:
        validate_channel_name(value)
    except ChannelNameError as exc:
        raise ValidationError(str(exc)) from exc


def validate_link(value: str) -> None:
    """Model validator: an absolute http(s) URL or a path on this site (``check_link``)."""
    try:
        check_link(value)
    except ValueError as exc:
        raise ValidationError(
            "Enter an http(s) URL or a path starting with '/', without spaces, control "
            "characters or backslashes."
        ) from exc


class Publishing(models.Model):
    """No table: the permissions of ``POST stream/publish/`` for logged-in users.

    ``stream_app.publish`` allows the channels everyone may read (``PUBLIC_CHANNELS`` and
    ``DEFAULT_CHANNELS``); ``stream_app.publish_any`` allows every channel, ``user:<pk>`` and
    ``staff`` included. ``is_staff`` alone allows nothing, as everywhere in Django.
    """

    class Meta:
        managed = False
        default_permissions = ()
        permissions = [
            ("publish", "Can publish events to public channels"),
            ("publish_any", "Can publish events to any channel"),
        ]


class NotificationQuerySet(models.QuerySet["Notification"]):
    """Queries that the sending and delivery code share."""

    def unexpired(self, now: Any = None) -> NotificationQuerySet:
        """Notifications without an expiry or whose expiry is still ahead."""
        now = now or timezone.now()
        return self.filter(models.Q(expires_at__isnull=True) | models.Q(expires_at__gt=now))

    def due(self, now: Any = None) -> NotificationQuerySet:
        """Scheduled, never sent, unexpired notifications whose ``send_at`` has come."""
        now = now or timezone.now()
        return self.unexpired(now).filter(sent_at__isnull=True, send_at__lte=now)


class Notification(models.Model):
    """A message an administrator (or code, through ``notify``) sends to connected users."""

    class Level(models.TextChoices):
        INFO = "info", "info"
        SUCCESS = "success", "success"
        WARNING = "warning", "warning"
        ERROR = "error", "error"

    class Audience(models.TextChoices):
        EVERYONE = "everyone", "everyone on the channel"
        STAFF = "staff", "staff only"
        SUPERUSERS = "superusers", "superusers only"
        USERS = "users", "given users"
        GROUPS = "groups", "given groups"
        FILTER = "filter", "advanced state filter"

    class BodyFormat(models.TextChoices):
        PLAIN = "plain", "plain text"
        MARKDOWN = "markdown", "markdown (safe subset)"

    class Status(models.TextChoices):
        DRAFT = "draft", "draft"
        SCHEDULED = "scheduled", "scheduled"
        SENT = "sent", "sent"
        EXPIRED = "expired", "expired"

    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    body_format = models.CharField(
        max_length=10, choices=BodyFormat.choices, default=BodyFormat.PLAIN
    )
    level = models.CharField(max_length=10, choices=Level.choices, default=Level.INFO)
    channel = models.CharField(
        max_length=100,
        default="notifications",
        validators=[validate_channel],
        help_text="The channel it is broadcast on; clients must be subscribed to it.",
    )
    audience = models.CharField(max_length=12, choices=Audience.choices, default=Audience.EVERYONE)
    users = models.ManyToManyField(
        settings.AUTH_USER_MODEL, blank=True, related_name="+", help_text="For 'given users'."
    )
    groups = models.ManyToManyField(
        Group, blank=True, related_name="+", help_text="For 'given groups'."
    )
    state_filter = models.JSONField(
        null=True,
        blank=True,
        help_text='For "advanced state filter": filter data such as '
        '{"any": [{"is_staff": true}, {"groups__contains": "ops"}]}.',
    )
    link = models.CharField(max_length=500, blank=True, validators=[validate_link])
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    created_at = models.DateTimeField(auto_now_add=True)
    send_at = models.DateTimeField(
        null=True, blank=True, help_text="Leave empty to send by hand; a future time schedules it."
    )
    sent_at = models.DateTimeField(null=True, blank=True, editable=False)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        editable=False,
    )
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="After this it is neither sent nor shown."
    )
    reach = models.PositiveIntegerField(
        null=True, blank=True, editable=False, help_text="Sessions it reached when last sent."
    )
    # The filter data of the last send (None: everyone), so that delivery on connect applies
    # exactly the audience the live broadcast had, without re-reading users and groups.
    sent_filter = models.JSONField(null=True, blank=True, editable=False)
    # The backend's event id of the last send, to tell what a reconnecting client already had.
    event_id = models.CharField(max_length=64, blank=True, editable=False)

    objects = NotificationQuerySet.as_manager()

    class Meta:
        ordering = ["-created_at", "-pk"]
        indexes = [
            models.Index(fields=["channel", "sent_at"], name="stream_app_notif_chan_sent"),
            models.Index(fields=["send_at"], name="stream_app_notif_send_at"),
        ]

    def __str__(self) -> str:
        return self.title

    def status_at(self, now: Any = None) -> str:
        """``draft``, ``scheduled``, ``sent`` or ``expired`` at ``now``."""
        now = now or timezone.now()
        if self.expires_at is not None and self.expires_at <= now:
            return self.Status.EXPIRED
        if self.sent_at is not None:
            return self.Status.SENT
        if self.send_at is not None:
            return self.Status.SCHEDULED
        return self.Status.DRAFT

    @property
    def status(self) -> str:
        """The status now (see ``status_at``)."""
        return self.status_at()


class NotificationSend(models.Model):
    """The audit trail: one row per send of a notification, kept if it is deleted."""

    class Via(models.TextChoices):
        ADMIN = "admin", "admin form"
        ACTION = "action", "admin action"
        SCHEDULE = "schedule", "schedule"
        CODE = "code", "notify()"

    notification = models.ForeignKey(
        Notification, null=True, on_delete=models.SET_NULL, related_name="sends"
    )
    title = models.CharField(max_length=200)
    sent_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    sent_by_name = models.CharField(max_length=150, blank=True)
    sent_at = models.DateTimeField(default=timezone.now)
    via = models.CharField(max_length=10, choices=Via.choices)
    channel = models.CharField(max_length=100)
    audience = models.CharField(max_length=300, help_text="Who it was meant for, in words.")
    audience_filter = models.JSONField(null=True, blank=True)
    reach = models.PositiveIntegerField(null=True, blank=True)
    event_id = models.CharField(max_length=64, blank=True)

    class Meta:
        ordering = ["-sent_at", "-pk"]

    def __str__(self) -> str:
        return f"{self.title!r} sent {self.sent_at:%Y-%m-%d %H:%M:%S} by {self.sent_by_name or '-'}"


class NotificationRead(models.Model):
    """A user has read (dismissed) a notification; it is no longer delivered to them on connect."""

    notification = models.ForeignKey(Notification, on_delete=models.CASCADE, related_name="reads")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    read_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["notification", "user"], name="stream_app_read_once")
        ]

    def __str__(self) -> str:
        return f"{self.user_id} read {self.notification_id}"
