"""Sending notifications: audience to filter data, the event payload, sends with an audit row.

A send marks the row sent (and commits) *before* it broadcasts: a client that connects in
between finds it in the database, and one that connects after the broadcast gets it live or
from the database, so none misses it (a client may see it twice in that instant; the payload's
stable ``id`` lets it drop the copy). If the broadcast fails the mark is undone.

Scheduled sends are claimed with one conditional UPDATE per row (``sent_at IS NULL`` ->
``sent_at = now``): the database lets exactly one of several concurrent runs win each row, so
``send_due_notifications`` may run from cron on every host. A run that dies between claim and
broadcast leaves the row marked sent: it is then delivered from the database when users
connect, not live (at most once live, never twice).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from asgiref.sync import sync_to_async
from django.contrib.auth.models import Group
from django.db import transaction
from django.utils import timezone

from ..backends.base import BackendUnavailable
from ..channels import get_channel
from ..filters import compile_filter
from ..models import Notification, NotificationSend
from .markup import body_nodes, check_link

__all__ = [
    "EVENT",
    "DueReport",
    "anotify",
    "asend_due",
    "asend_notification",
    "audience_filter",
    "describe_audience",
    "notification_payload",
    "notify",
    "send_due",
    "send_notification",
]

logger = logging.getLogger("stream_app")

#: The SSE event type of every notification.
EVENT = "notification"
Audience = Notification.Audience


def audience_filter(
    audience: str,
    *,
    user_ids: list[int] | None = None,
    group_names: list[str] | None = None,
    state_filter: Any = None,
) -> Any:
    """The broadcast filter data for an audience (None: everyone on the channel).

    Raises FilterError for a malformed advanced filter and ValueError for an audience that
    names nobody (no users, no groups).
    """
    if audience == Audience.EVERYONE:
        return None
    if audience == Audience.STAFF:
        return {"is_staff": True}
    if audience == Audience.SUPERUSERS:
        return {"is_superuser": True}
    if audience == Audience.USERS:
        if not user_ids:
            raise ValueError("choose at least one user")
        return {"user_id__in": sorted(user_ids)}
    if audience == Audience.GROUPS:
        if not group_names:
            raise ValueError("choose at least one group")
        names = sorted(group_names)
        if len(names) == 1:
            return {"groups__contains": names[0]}
        return {"any": [{"groups__contains": name} for name in names]}
    if audience == Audience.FILTER:
        if state_filter is None:
            raise ValueError("enter a filter")
        compile_filter(state_filter)
        return state_filter
    raise ValueError(f"unknown audience {audience!r}")


def _filter_of(notification: Notification) -> Any:
    return audience_filter(
        notification.audience,
        user_ids=list(notification.users.values_list("pk", flat=True)),
        group_names=list(notification.groups.values_list("name", flat=True)),
        state_filter=notification.state_filter,
    )


def describe_audience(notification: Notification) -> str:
    """Who a notification is for, in words (for the audit trail)."""
    label = f"{notification.get_audience_display()} on {notification.channel!r}"
    if notification.audience == Audience.USERS:
        names = [u.get_username() for u in notification.users.all()[:20]]
        label += ": " + ", ".join(names)
    elif notification.audience == Audience.GROUPS:
        label += ": " + ", ".join(g.name for g in notification.groups.all()[:20])
    return label[:300]


def notification_payload(notification: Notification) -> dict[str, Any]:
    """The event data: the same for the live broadcast and for delivery on connect."""

    def iso(value: datetime | None) -> str | None:
        return value.isoformat() if value is not None else None

    return {
        "id": notification.pk,
        "title": notification.title,
        "body": notification.body,
        # Data for createElement and text nodes, never HTML (markup.body_nodes).
        "body_nodes": body_nodes(notification.body, notification.body_format),
        "level": notification.level,
        "link": notification.link,
        "channel": notification.channel,
        "sent_at": iso(notification.sent_at),
        "expires_at": iso(notification.expires_at),
    }


@dataclass
class _Prepared:
    channel: str
    filter: Any
    payload: dict[str, Any]
    audience: str


def _mark_sent(
    notification: Notification, sent_by: Any, sent_at: datetime, *, claim: bool
) -> _Prepared | None:
    """Mark the row sent (conditionally when ``claim``) and read what the send needs.

    Raises ValueError for an unsafe link: rows written by code skip the model's validators.
    """
    check_link(notification.link)
    rows = Notification.objects.filter(pk=notification.pk)
    if claim:
        rows = rows.filter(sent_at__isnull=True)
    spec = _filter_of(notification)
    updated = rows.update(
        sent_at=sent_at,
        sent_by=sent_by if getattr(sent_by, "pk", None) else None,
        sent_filter=spec,
    )
    if not updated:
        return None
    notification.refresh_from_db()
    return _Prepared(
        notification.channel,
        spec,
        notification_payload(notification),
        describe_audience(notification),
    )


def _unmark(notification: Notification, sent_at: datetime, previous: datetime | None) -> None:
    Notification.objects.filter(pk=notification.pk, sent_at=sent_at).update(sent_at=previous)
    notification.sent_at = previous


def _record(
    notification: Notification,
    prepared: _Prepared,
    *,
    sent_by: Any,
    via: str,
    sent_at: datetime,
    reach: int | None,
    event_id: str,
) -> NotificationSend:
    Notification.objects.filter(pk=notification.pk).update(reach=reach, event_id=event_id)
    notification.reach, notification.event_id = reach, event_id
    user = sent_by if getattr(sent_by, "pk", None) else None
    return NotificationSend.objects.create(
        notification=notification,
        title=notification.title,
        sent_by=user,
        sent_by_name=user.get_username() if user is not None else "",
        sent_at=sent_at,
        via=via,
        channel=prepared.channel,
        audience=prepared.audience,
        audience_filter=prepared.filter,
        reach=reach,
        event_id=event_id,
    )


def send_notification(
    notification: Notification,
    *,
    sent_by: Any = None,
    via: str = NotificationSend.Via.CODE,
    claim: bool = False,
) -> NotificationSend | None:
    """Broadcast ``notification`` now and record the send; returns the audit row.

    Sending again is allowed (a resend) unless ``claim``, which sends only a never-sent row and
    returns None if another process has sent it. Raises BackendUnavailable (the row is left
    unsent) when the backend cannot publish. Call it outside a transaction, or from
    ``transaction.on_commit``: other processes must see the row before clients can.
    """
    sent_at = timezone.now()
    previous = notification.sent_at
    prepared = _mark_sent(notification, sent_by, sent_at, claim=claim)
    if prepared is None:
        return None
    channel = get_channel(prepared.channel)
    try:
        reach: int | None = channel.count(prepared.filter)
    except BackendUnavailable:
        reach = None
    try:
        event_id = channel.broadcast(prepared.payload, EVENT, filter=prepared.filter)
    except Exception:
        _unmark(notification, sent_at, previous)
        raise
    return _record(
        notification,
        prepared,
        sent_by=sent_by,
        via=via,
        sent_at=sent_at,
        reach=reach,
        event_id=event_id,
    )


async def asend_notification(
    notification: Notification,
    *,
    sent_by: Any = None,
    via: str = NotificationSend.Via.CODE,
    claim: bool = False,
) -> NotificationSend | None:
    """The async form of ``send_notification`` (one event loop for counts and publishes)."""
    sent_at = timezone.now()
    previous = notification.sent_at
    prepared = await sync_to_async(_mark_sent)(notification, sent_by, sent_at, claim=claim)
    if prepared is None:
        return None
    channel = get_channel(prepared.channel)
    try:
        reach: int | None = await channel.acount(prepared.filter)
    except BackendUnavailable:
        reach = None
    try:
        event_id = await channel.abroadcast(prepared.payload, EVENT, filter=prepared.filter)
    except Exception:
        await sync_to_async(_unmark)(notification, sent_at, previous)
        raise
    return await sync_to_async(_record)(
        notification,
        prepared,
        sent_by=sent_by,
        via=via,
        sent_at=sent_at,
        reach=reach,
        event_id=event_id,
    )


@dataclass
class DueReport:
    """What one ``send_due`` run did."""

    due: int = 0
    sent: list[int] = field(default_factory=list)
    claimed_elsewhere: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)


def _due_rows(now: datetime, limit: int) -> list[Notification]:
    return list(Notification.objects.due(now).order_by("send_at", "pk")[:limit])


async def asend_due(
    *, now: datetime | None = None, limit: int = 100, on_due: Any = None
) -> DueReport:
    """Claim and send every due scheduled notification (see the module docstring).

    ``on_due(count)`` is called once the candidates are known, before any is claimed.
    """
    now = now or timezone.now()
    rows = await sync_to_async(_due_rows)(now, limit)
    report = DueReport(due=len(rows))
    if on_due is not None:
        on_due(len(rows))
    for notification in rows:
        try:
            sent = await asend_notification(
                notification, via=NotificationSend.Via.SCHEDULE, claim=True
            )
        except (BackendUnavailable, ValueError):
            # ValueError: an audience that no longer names anyone (FilterError is one too).
            logger.exception("could not send notification %s; it stays due", notification.pk)
            report.failed.append(notification.pk)
            continue
        if sent is None:
            report.claimed_elsewhere.append(notification.pk)
        else:
            report.sent.append(notification.pk)
    return report


def send_due(*, now: datetime | None = None, limit: int = 100) -> DueReport:
    """``asend_due`` for sync code."""
    from asgiref.sync import async_to_sync

    return async_to_sync(asend_due)(now=now, limit=limit)


def _create_for(user: Any, title: str, body: str, level: str, **fields: Any) -> Notification:
    notification = Notification.objects.create(
        title=title,
        body=body,
        level=level,
        channel=f"user:{user.pk}",
        audience=Audience.USERS,
        **fields,
    )
    notification.users.add(user)
    return notification


def _deliver_on_connect(notification: Notification, user: Any) -> None:
    # Not broadcast, but marked sent so that delivery on connect picks it up.
    Notification.objects.filter(pk=notification.pk, sent_at__isnull=True).update(
        sent_at=timezone.now(), sent_filter={"user_id__in": [user.pk]}
    )


def _check(level: str, link: str) -> None:
    if level not in Notification.Level.values:
        raise ValueError(f"level must be one of {', '.join(Notification.Level.values)}")
    check_link(link)


def notify(
    user: Any,
    title: str,
    body: str = "",
    level: str = Notification.Level.INFO,
    *,
    link: str = "",
    expires_at: datetime | None = None,
    body_format: str = Notification.BodyFormat.PLAIN,
) -> Notification:
    """Notify one user on their channel ``user:<pk>`` from anywhere; returns the notification.

    Raises ValueError for an unknown level or a link that is not an http(s) URL or a path
    starting with '/' (``markup.check_link``), before anything is written.

    Inside a transaction the broadcast waits for the commit (so the user can never be told about
    a row that is rolled back); a backend failure is logged and the user still gets it from the
    database when they next connect.
    """
    _check(level, link)
    notification = _create_for(
        user, title, body, level, link=link, expires_at=expires_at, body_format=body_format
    )

    def send() -> None:
        try:
            send_notification(notification, via=NotificationSend.Via.CODE)
        except BackendUnavailable:
            logger.exception("notify(): broadcast failed; delivered on the user's next connect")
            _deliver_on_connect(notification, user)

    transaction.on_commit(send)
    return notification


async def anotify(
    user: Any,
    title: str,
    body: str = "",
    level: str = Notification.Level.INFO,
    *,
    link: str = "",
    expires_at: datetime | None = None,
    body_format: str = Notification.BodyFormat.PLAIN,
) -> Notification:
    """The async form of ``notify``."""
    _check(level, link)
    notification = await sync_to_async(_create_for)(
        user, title, body, level, link=link, expires_at=expires_at, body_format=body_format
    )
    try:
        await asend_notification(notification, via=NotificationSend.Via.CODE)
    except BackendUnavailable:
        logger.exception("anotify(): broadcast failed; delivered on the user's next connect")
        await sync_to_async(_deliver_on_connect)(notification, user)
    return notification


def group_names(pks: list[int]) -> list[str]:
    """Names of the groups with these primary keys."""
    return list(Group.objects.filter(pk__in=pks).values_list("name", flat=True))
