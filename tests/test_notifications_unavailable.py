"""Notifications while the backend cannot publish: nothing is recorded as sent that was not,
and what a user must get reaches them on their next connect.

The backend is the Redis backend pointed at a loopback port where nothing listens: a real
connection refused, as when Redis is down.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from django.contrib.auth.models import User
from django.test import override_settings
from django.utils import timezone

from stream_app.backends import reset_backend
from stream_app.backends.base import BackendUnavailable
from stream_app.models import Notification, NotificationSend
from stream_app.notifications.sending import anotify, notify, send_due, send_notification
from tests.conftest import free_port

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def redis_down() -> Iterator[None]:
    options = {
        "BACKEND": "stream_app.backends.redis.RedisBackend",
        "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
    }
    with override_settings(STREAM_APP=options):
        reset_backend()
        yield
    reset_backend()


def test_send_notification_without_backend_leaves_the_row_unsent() -> None:
    notification = Notification.objects.create(title="news")
    with pytest.raises(BackendUnavailable, match="unreachable"):
        send_notification(notification)
    notification.refresh_from_db()
    assert notification.sent_at is None
    assert not NotificationSend.objects.exists()


def test_a_resend_without_backend_keeps_the_first_send() -> None:
    first = timezone.now() - timedelta(hours=1)
    notification = Notification.objects.create(title="news", sent_at=first, reach=3)
    with pytest.raises(BackendUnavailable):
        send_notification(notification)
    notification.refresh_from_db()
    assert notification.sent_at == first


def test_send_due_without_backend_reports_failures_and_keeps_them_due(
    caplog: pytest.LogCaptureFixture,
) -> None:
    past = timezone.now() - timedelta(minutes=1)
    rows = [Notification.objects.create(title=f"due {i}", send_at=past) for i in range(2)]
    report = send_due()
    assert (report.due, report.sent, report.failed) == (2, [], [row.pk for row in rows])
    assert Notification.objects.due(timezone.now()).count() == 2
    assert f"could not send notification {rows[0].pk}; it stays due" in caplog.text


def test_notify_without_backend_delivers_on_the_next_connect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    alice = User.objects.create_user("alice")
    notification = notify(alice, "hello", level="warning")
    notification.refresh_from_db()
    # Marked sent to alice only, so that delivery on connect picks it up.
    assert notification.sent_at is not None
    assert notification.sent_filter == {"user_id__in": [alice.pk]}
    assert notification.channel == f"user:{alice.pk}"
    assert not NotificationSend.objects.exists()
    assert "notify(): broadcast failed" in caplog.text


async def test_anotify_without_backend_delivers_on_the_next_connect(
    caplog: pytest.LogCaptureFixture,
) -> None:
    bob = await User.objects.acreate(username="bob")
    notification = await anotify(bob, "hello")
    await notification.arefresh_from_db()
    assert notification.sent_at is not None
    assert notification.sent_filter == {"user_id__in": [bob.pk]}
    assert "anotify(): broadcast failed" in caplog.text


def test_notify_refuses_an_unknown_level_before_writing() -> None:
    alice = User.objects.create_user("alice")
    with pytest.raises(ValueError, match="level must be one of"):
        notify(alice, "hello", level="shout")
    assert not Notification.objects.exists()


def test_a_claim_of_a_sent_row_returns_none_without_publishing() -> None:
    """``claim`` sends only a never-sent row: one another process sent is left alone (here the
    backend is down, so reaching it would raise)."""
    sent_at = timezone.now()
    notification = Notification.objects.create(title="news", sent_at=sent_at)
    assert send_notification(notification, claim=True) is None
    notification.refresh_from_db()
    assert notification.sent_at == sent_at
