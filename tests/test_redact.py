"""Credentials are never printed: Redis URLs and passwords in responses, log lines and admin
messages are redacted, while the host and port still say where the backend was looked for."""

from __future__ import annotations

import logging
import signal
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client, override_settings

from stream_app.backends import reset_backend
from stream_app.backends.base import BackendUnavailable
from stream_app.channels import get_channel
from stream_app.models import Notification
from stream_app.redact import redact, redact_url
from tests.conftest import Server, free_port

PASSWORD = "hunter2-Pa55word"
TOKEN = {"Authorization": "Bearer test-token"}


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        (f"redis://:{PASSWORD}@127.0.0.1:6380/0", "redis://:***@127.0.0.1:6380/0"),
        (
            f"rediss://default:{PASSWORD}@cache.example:6379",
            "rediss://default:***@cache.example:6379",
        ),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user@host:1/0", "redis://user@host:1/0"),
        ("unix:///run/redis.sock?db=0", "unix:///run/redis.sock?db=0"),
        ("redis://:p%40ss@h:1/0", "redis://:***@h:1/0"),
    ],
)
def test_redact_url_hides_the_password_only(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@override_settings(STREAM_APP={"REDIS_URL": "redis://:p%40ss@h:1/0"})
def test_redact_hides_urls_in_text_and_the_configured_password_anywhere() -> None:
    text = f"at redis://u:{PASSWORD}@h:2/0 and amqp://x:y@q/ failed; AUTH p@ss refused"
    assert redact(text) == "at redis://u:***@h:2/0 and amqp://x:***@q/ failed; AUTH *** refused"


@override_settings(
    STREAM_APP={
        "REDIS_URL": "redis+sentinel://:p%40ss@h1:26379,h2:26379/svc/0",
        "REDIS_OPTIONS": {"password": "opt-secret", "sentinel_kwargs": {"password": "sen-pw"}},
    }
)
def test_redact_hides_sentinel_url_and_option_passwords() -> None:
    text = "AUTH p@ss, then opt-secret, then sen-pw at redis+sentinel://:p%40ss@h1:26379/svc"
    assert redact(text) == "AUTH ***, then ***, then *** at redis+sentinel://:***@h1:26379/svc"


@pytest.fixture
def unreachable_redis() -> Iterator[str]:
    """This process on a Redis URL with a password, whose port nothing listens on."""
    url = f"redis://:{PASSWORD}@127.0.0.1:{free_port()}/0"
    options = {"BACKEND": "stream_app.backends.redis.RedisBackend", "REDIS_URL": url}
    reset_backend()
    with override_settings(STREAM_APP=options):
        yield url
    reset_backend()


@pytest.mark.django_db
def test_redact_admin_messages_and_publish_logs(
    unreachable_redis: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = unreachable_redis.rsplit(":", 1)[1].split("/")[0]
    admin = User.objects.create_superuser("boss", password="pw")
    client = Client()
    client.force_login(admin)
    notification = Notification.objects.create(title="down")
    data = {"action": "send_selected", "_selected_action": [notification.pk], "post": "yes"}
    with caplog.at_level(logging.DEBUG, logger="stream_app"):
        page = client.post("/admin/stream_app/notification/", data, follow=True)
        count = client.get("/admin/stream_app/notification/audience-count/", {"channel": "news"})
        with pytest.raises(BackendUnavailable) as raised:
            get_channel("news").broadcast("x")
    shown = [str(m) for m in page.context["messages"]]
    assert any("was not sent" in m for m in shown), shown
    assert count.status_code == 503
    logged = "\n".join(r.getMessage() for r in caplog.records)
    for text in (*shown, count.content.decode(), logged, str(raised.value)):
        assert PASSWORD not in text
    assert any(f"127.0.0.1:{port}" in m for m in shown)
    assert f"127.0.0.1:{port}" in logged
    assert "event=publish_error" in logged


async def test_redact_publish_health_metrics_and_server_log_with_debug_off(
    server_factory: Any,
) -> None:
    port = free_port()
    env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": f"redis://:{PASSWORD}@127.0.0.1:{port}/0",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "redact-test-key",
        "STREAM_LOG_LEVEL": "DEBUG",
    }
    server: Server = server_factory("uvicorn", env)
    async with httpx.AsyncClient(base_url=server.url, timeout=15) as client:
        published = await client.post(
            "/stream/publish/", json={"channel": "news", "data": 1}, headers=TOKEN
        )
        health = await client.get("/stream/health/")
        metrics = await client.get("/stream/metrics/")
        # A stream starts the listener, which fails to connect and retries.
        async with client.stream("GET", "/sse/?channel=news") as stream:
            assert stream.status_code == 200
    server.stop(signal.SIGTERM)
    log = server.log.read_text()
    assert published.status_code == 503
    assert f"127.0.0.1:{port}" in published.json()["message"]
    assert health.status_code == 503
    assert f"127.0.0.1:{port}" in log
    for text in (published.text, health.text, metrics.text, log):
        assert PASSWORD not in text
