"""Delivery on connect: the notifications a user missed while offline, from the database.

``stream_view`` runs the ``CONNECT_HOOKS`` once a session is subscribed; ``deliver_backlog`` is
the default one. For a session on a notification channel (``NOTIFICATION_CHANNELS`` or
``user:<pk>``) it pushes, oldest first, the sent and unexpired notifications of those channels
whose audience matches the session's state and that the user has not read since they were
last sent (at most ``NOTIFICATION_BACKLOG``).

A reconnecting client (``Last-Event-ID``) already has what came before its id, and
``subscribe`` has just replayed what the stream history still holds after it: the database
then only fills the gap the history lost, skipping what was replayed (``replay.coverage``,
from the same read of history), so each notification arrives once.

Divergence: backlog events carry no SSE ``id``. They are older than the live position, and an
``id`` would move the browser's ``lastEventId`` backwards, so that the next reconnect would
replay other channels' events the page never asked for. Their stable identity is the payload's
``id`` (the notification's primary key).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db.models import Exists, OuterRef
from django.utils import timezone

from ..conf import app_settings
from ..filters import FilterError, compile_filter
from ..models import Notification, NotificationRead
from ..replay import coverage
from .sending import EVENT, notification_payload

if TYPE_CHECKING:
    from ..sessions import Session

__all__ = ["backlog_for", "deliver_backlog", "is_notification_channel"]

logger = logging.getLogger("stream_app")


def is_notification_channel(name: str) -> bool:
    """Whether notifications sent on ``name`` are delivered from the database on connect."""
    return name.startswith("user:") or name in app_settings.NOTIFICATION_CHANNELS


def backlog_for(
    channels: Sequence[str], state: dict[str, Any], limit: int | None = None
) -> list[Notification]:
    """The unread, unexpired sent notifications of ``channels`` for a session state, in order."""
    limit = app_settings.NOTIFICATION_BACKLOG if limit is None else limit
    if limit <= 0 or not channels:
        return []
    rows = Notification.objects.unexpired(timezone.now()).filter(
        channel__in=list(channels), sent_at__isnull=False
    )
    user_id = state.get("user_id")
    if user_id is not None:
        # Read after its last send: a resend makes it unread again.
        read = NotificationRead.objects.filter(
            notification=OuterRef("pk"), user_id=user_id, read_at__gte=OuterRef("sent_at")
        )
        rows = rows.exclude(Exists(read))
    # Audiences are checked in Python (the same filter data the broadcast used), so read a few
    # more rows than will be kept.
    candidates = list(rows.order_by("-sent_at", "-pk")[: limit * 4])
    kept: list[Notification] = []
    for notification in candidates:
        try:
            predicate = compile_filter(notification.sent_filter)
        except FilterError:
            continue
        if predicate is None or predicate(state):
            kept.append(notification)
            if len(kept) == limit:
                break
    kept.reverse()
    return kept


async def deliver_backlog(session: Session, channels: Sequence[str]) -> None:
    """The connect hook: push the session's missed notifications (see the module docstring)."""
    names = [name for name in channels if is_notification_channel(name)]
    if not names:
        return
    try:
        # What the replay just found in history (no second read of it): it says which
        # notifications the client has already, or has just been sent.
        covered = coverage(session)
        rows = await sync_to_async(backlog_for)(names, session.state)
        for notification in rows:
            if (
                covered is not None
                and notification.event_id
                and covered.covers(notification.channel, notification.event_id)
            ):
                continue
            if not await session.send(notification_payload(notification), EVENT):
                return
    except Exception:
        # The stream works without its backlog; never fail the connection for it.
        logger.exception("could not deliver missed notifications")
