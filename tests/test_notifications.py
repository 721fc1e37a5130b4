"""Notifications: sent from the real admin, delivered by two worker processes sharing Redis.

Every stream here is a real socket to daphne or uvicorn; the admin runs in this process through
Django's test client (with CSRF checks on) and publishes to the same Redis under the same key
prefix, so its broadcasts reach both workers as they would in production. A ``sentinel`` event
published after each send bounds every read: Redis orders events, so whatever a stream has not
received before the sentinel, it will not receive.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import redis
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.core.exceptions import ValidationError
from django.test import Client, override_settings
from django.utils import timezone

from stream_app.backends import reset_backend
from stream_app.channels import get_channel
from stream_app.models import Notification, NotificationRead, NotificationSend
from stream_app.notifications.markup import body_nodes, check_link, is_safe_link
from stream_app.notifications.sending import anotify, notify, send_notification
from stream_app.protocol import Event
from stream_app.testing import EventStream
from tests.conftest import ROOT, RedisServer, Server, start_server

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ADD_URL = "/admin/stream_app/notification/add/"
CHANGELIST_URL = "/admin/stream_app/notification/"
COUNT_URL = "/admin/stream_app/notification/audience-count/"


# -- fixtures -----------------------------------------------------------------------------------


@dataclass
class Cluster:
    """Two workers (daphne and uvicorn) on one Redis with a key prefix of their own."""

    servers: list[Server]
    env: dict[str, str]

    @property
    def redis_url(self) -> str:
        return self.env["REDIS_URL"]

    @property
    def prefix(self) -> str:
        return self.env["STREAM_KEY_PREFIX"]

    def command_env(self) -> dict[str, str]:
        """Environment for a ``manage.py`` process on the cluster's Redis and the test DB."""
        return {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.server_settings",
            "DJANGO_DB_PATH": settings.DATABASES["default"]["NAME"],
            **self.env,
        }


@pytest.fixture(scope="module")
def cluster(django_db_setup: None, redis_server: RedisServer) -> Iterator[Cluster]:
    """Started once for the module: the workers keep no state between tests but sessions."""
    if redis_server.proc is None:
        redis_server.start()
    env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": redis_server.url,
        "STREAM_KEY_PREFIX": f"n{os.getpid()}x{time.monotonic_ns()}",
        "STREAM_KEEP_ALIVE": "1",
    }
    servers = [start_server("daphne", env), start_server("uvicorn", env)]
    yield Cluster(servers, env)
    for server in servers:
        server.stop()


@pytest.fixture
def on_cluster(cluster: Cluster) -> Iterator[Cluster]:
    """This process publishes and counts through the cluster's Redis, as the admin would."""
    stream_app = {
        **settings.STREAM_APP,
        "BACKEND": "stream_app.backends.redis.RedisBackend",
        "REDIS_URL": cluster.redis_url,
        "KEY_PREFIX": cluster.prefix,
    }
    reset_backend()
    with override_settings(STREAM_APP=stream_app):
        yield cluster
    reset_backend()


@dataclass
class People:
    staff: User
    boss: User
    alice: User
    bob: User
    clerk: User


def make_people() -> People:
    """staff (may send), boss (superuser), alice (group ops), bob, clerk (staff, no perms)."""
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="stream_app",
            codename__in=["add_notification", "change_notification", "view_notification"],
        )
    )
    boss = User.objects.create_superuser("boss", password="pw")
    alice = User.objects.create_user("alice", password="pw")
    alice.groups.add(Group.objects.create(name="ops"))
    Group.objects.create(name="sales")
    bob = User.objects.create_user("bob", password="pw")
    clerk = User.objects.create_user("clerk", password="pw", is_staff=True)
    return People(staff, boss, alice, bob, clerk)


@pytest.fixture
async def people(on_cluster: Cluster) -> People:
    return await sync_to_async(make_people)()


def session_cookie(user: User | None) -> str | None:
    """A real session (in the shared DB) for ``user``, as its cookie value."""
    if user is None:
        return None
    client = Client()
    client.force_login(user)
    return client.cookies[settings.SESSION_COOKIE_NAME].value


# -- helpers ------------------------------------------------------------------------------------


async def connect(
    server: Server,
    user: User | None,
    channels: tuple[str, ...] = ("notifications",),
    last_event_id: str | None = None,
) -> tuple[EventStream, list[Event]]:
    """Open a stream as ``user``; returns it and the events before ``ready`` (the backlog)."""
    cookie = await sync_to_async(session_cookie)(user)
    headers = {}
    if cookie:
        headers["Cookie"] = f"{settings.SESSION_COOKIE_NAME}={cookie}"
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    query = "&".join(f"channel={quote(name)}" for name in channels)
    stream = await EventStream(f"{server.url}/sse/?{query}", headers=headers).open()
    assert stream.status_code == 200, await stream.response.aread()  # type: ignore[union-attr]
    before: list[Event] = []
    for _ in range(200):
        event = await stream.next_event(10)
        if event.event == "ready":
            return stream, before
        before.append(event)
    raise AssertionError("no ready event")


async def sentinel(channel: str = "notifications") -> str:
    """Publish a marker after everything sent so far; returns its token."""
    token = uuid.uuid4().hex
    await get_channel(channel).abroadcast(token, "sentinel")
    return token


async def until(stream: EventStream, token: str) -> list[Event]:
    """Events before the sentinel ``token``."""
    events: list[Event] = []
    for _ in range(500):
        event = await stream.next_event(10)
        if event.event == "sentinel" and event.data == token:
            return events
        events.append(event)
    raise AssertionError("sentinel never came")


async def on_connect(
    server: Server,
    user: User | None,
    channels: tuple[str, ...] = ("notifications",),
    last_event_id: str | None = None,
) -> list[Event]:
    """Everything a new connection receives before a sentinel published once it is ready."""
    stream, before = await connect(server, user, channels, last_event_id)
    try:
        token = await sentinel(channels[0])
        return before + await until(stream, token)
    finally:
        await stream.close()


def notifications_in(events: list[Event]) -> list[dict[str, Any]]:
    return [json.loads(e.data or "") for e in events if e.event == "notification"]


def admin_client(user: User) -> tuple[Client, str]:
    """A test client logged in as ``user`` that enforces CSRF, and its CSRF token."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    # The login page always renders a form (so sets the cookie); staff get the index instead.
    client.get("/admin/login/")
    if "csrftoken" not in client.cookies:
        client.get("/admin/")
    return client, client.cookies["csrftoken"].value


def form_data(title: str, token: str, **fields: Any) -> dict[str, Any]:
    """A complete add/change form POST, as the browser sends it."""
    data: dict[str, Any] = {
        "csrfmiddlewaretoken": token,
        "title": title,
        "body": "Body of **" + title + "**",
        "body_format": "markdown",
        "level": "info",
        "link": "",
        "channel": "notifications",
        "audience": "everyone",
        "state_filter": "",
        "send_at_0": "",
        "send_at_1": "",
        "expires_at_0": "",
        "expires_at_1": "",
        "sends-TOTAL_FORMS": "0",
        "sends-INITIAL_FORMS": "0",
        "sends-MIN_NUM_FORMS": "0",
        "sends-MAX_NUM_FORMS": "1000",
    }
    data.update(fields)
    return data


def admin_send(user: User, title: str, **fields: Any) -> httpx.Response | Any:
    """Fill the admin's add form and press "Save and send"."""
    client, token = admin_client(user)
    return client.post(ADD_URL, form_data(title, token, _send="Save and send", **fields))


def ids_of(*names: str) -> list[int]:
    return list(User.objects.filter(username__in=names).values_list("pk", flat=True))


def group_ids(*names: str) -> list[int]:
    return list(Group.objects.filter(name__in=names).values_list("pk", flat=True))


def send_now(title: str, **fields: Any) -> Notification:
    notification = Notification.objects.create(title=title, **fields)
    send_notification(notification)
    notification.refresh_from_db()
    return notification


# -- delivery across workers --------------------------------------------------------------------

AUDIENCES = [
    pytest.param({"audience": "staff"}, {"staff", "boss", "clerk"}, id="staff-only"),
    pytest.param({"audience": "superusers"}, {"boss"}, id="superusers"),
    pytest.param({"audience": "groups", "groups": ("ops",)}, {"alice"}, id="group"),
    pytest.param({"audience": "users", "users": ("bob", "alice")}, {"alice", "bob"}, id="users"),
    pytest.param(
        {
            "audience": "filter",
            "state_filter": '{"any": [{"username": "bob"}, {"is_anonymous": true}]}',
        },
        {"bob", "anonymous"},
        id="state-filter",
    ),
    pytest.param(
        {"audience": "everyone"},
        {"staff", "boss", "alice", "bob", "clerk", "anonymous"},
        id="everyone",
    ),
]


@pytest.mark.parametrize(("audience", "expected"), AUDIENCES)
async def test_admin_send_reaches_exactly_the_audience_on_both_workers(
    cluster: Cluster, people: People, audience: dict[str, Any], expected: set[str]
) -> None:
    viewers: dict[str, User | None] = {
        "staff": people.staff,
        "boss": people.boss,
        "alice": people.alice,
        "bob": people.bob,
        "clerk": people.clerk,
        "anonymous": None,
    }
    streams = {
        (name, server.kind): (await connect(server, user))[0]
        for server in cluster.servers
        for name, user in viewers.items()
    }
    fields = dict(audience)
    if "users" in fields:
        fields["users"] = await sync_to_async(ids_of)(*fields["users"])
    if "groups" in fields:
        fields["groups"] = await sync_to_async(group_ids)(*fields["groups"])
    title = f"Hello {audience['audience']}"
    try:
        response = await sync_to_async(admin_send)(people.staff, title, **fields)
        assert response.status_code == 302, response.content.decode()[:2000]
        token = await sentinel()
        received = {key: notifications_in(await until(s, token)) for key, s in streams.items()}
    finally:
        for stream in streams.values():
            await stream.close()
    notification = await Notification.objects.aget(title=title)
    reached = {key for key, got in received.items() if got}
    assert reached == {(name, s.kind) for name in expected for s in cluster.servers}
    for key in reached:
        assert [n["title"] for n in received[key]] == [title], key
        assert received[key][0]["id"] == notification.pk
        assert received[key][0]["body_nodes"] == [
            {"tag": "p", "children": ["Body of ", {"tag": "strong", "children": [title]}]}
        ]
        assert "html" not in received[key][0]
    assert notification.reach == len(reached)
    assert notification.sent_by_id == people.staff.pk
    audit = [s async for s in NotificationSend.objects.filter(notification=notification)]
    assert [(a.sent_by_name, a.via, a.reach) for a in audit] == [("staff", "admin", len(reached))]


async def test_admin_live_count_matches_sessions_on_both_workers(
    cluster: Cluster, people: People
) -> None:
    streams = [
        (await connect(server, user))[0]
        for server in cluster.servers
        for user in (people.alice, people.bob, people.staff, None)
    ]

    def counts() -> dict[str, Any]:
        client, _ = admin_client(people.staff)
        ops = group_ids("ops")[0]
        return {
            "everyone": client.get(COUNT_URL, {"channel": "notifications"}).json(),
            "staff": client.get(
                COUNT_URL, {"channel": "notifications", "audience": "staff"}
            ).json(),
            "ops": client.get(
                COUNT_URL, {"channel": "notifications", "audience": "groups", "groups": ops}
            ).json(),
            "bad": client.get(
                COUNT_URL,
                {"channel": "notifications", "audience": "filter", "state_filter": '{"a__gt": []}'},
            ),
        }

    try:
        result = await sync_to_async(counts)()
    finally:
        for stream in streams:
            await stream.close()
    assert result["everyone"]["count"] == 8
    assert result["staff"]["count"] == 2
    assert result["ops"]["count"] == 2
    assert result["bad"].status_code == 400
    assert "a__gt" in result["bad"].json()["message"]


# -- delivery on connect ------------------------------------------------------------------------


async def test_backlog_on_connect_delivers_unexpired_once_and_expired_never(
    cluster: Cluster, people: People
) -> None:
    def prepare() -> dict[str, Notification]:
        sent = {
            "old": send_now("old news"),
            "expired": send_now("expired", expires_at=timezone.now() + timedelta(hours=1)),
            "staff": send_now("staff only", audience="staff"),
            "read": send_now("already read"),
            "fresh": send_now("fresh", expires_at=timezone.now() + timedelta(hours=1)),
            "other channel": send_now("elsewhere", channel="staff"),
        }
        Notification.objects.filter(pk=sent["expired"].pk).update(
            expires_at=timezone.now() - timedelta(seconds=1)
        )
        NotificationRead.objects.create(notification=sent["read"], user=people.bob)
        Notification.objects.create(title="draft")
        return sent

    sent = await sync_to_async(prepare)()
    for server in cluster.servers:
        events = await on_connect(server, people.bob)
        got = notifications_in(events)
        # Once each, in order; expired, read, other audiences and other channels never.
        assert [n["title"] for n in got] == ["old news", "fresh"]
        assert [n["id"] for n in got] == [sent["old"].pk, sent["fresh"].pk]
        # No SSE id: the browser's Last-Event-ID must not move back to old events.
        assert all(e.id is None for e in events if e.event == "notification")

    events = await on_connect(cluster.servers[0], people.staff, ("notifications", "staff"))
    assert [n["title"] for n in notifications_in(events)] == [
        "old news",
        "staff only",
        "already read",
        "fresh",
        "elsewhere",
    ]


async def test_mark_read_endpoint_stops_delivery_on_connect(
    cluster: Cluster, people: People
) -> None:
    first = await sync_to_async(send_now)("first")
    second = await sync_to_async(send_now)("second")
    server = cluster.servers[1]
    cookie = await sync_to_async(session_cookie)(people.bob)
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        client.cookies.set(settings.SESSION_COOKIE_NAME, cookie or "")
        page = await client.get("/stream/notifications/demo/")
        assert page.status_code == 200
        csrf = client.cookies["csrftoken"]
        refused = await client.post("/stream/notifications/read/", json={"ids": [first.pk]})
        marked = await client.post(
            "/stream/notifications/read/",
            json={"ids": [first.pk, 999999]},
            headers={"X-CSRFToken": csrf},
        )
    assert refused.status_code == 403
    assert marked.status_code == 200
    assert marked.json() == {"read": [first.pk]}
    events = await on_connect(server, people.bob)
    assert [n["id"] for n in notifications_in(events)] == [second.pk]

    # Sending it again makes it unread again (resends are explicit and deliberate).
    await sync_to_async(send_notification)(first)
    events = await on_connect(server, people.bob)
    assert [n["id"] for n in notifications_in(events)] == [second.pk, first.pk]


async def test_reconnect_with_last_event_id_gets_missed_notifications_once(
    cluster: Cluster, people: People
) -> None:
    a, b = cluster.servers
    stream, _ = await connect(a, people.bob)
    try:
        await sync_to_async(send_now)("seen live")
        token = await sentinel()
        live = [e for e in await until(stream, token) if e.event == "notification"]
    finally:
        await stream.close()
    assert live[0].id
    last_id = await sync_to_async(lambda: Notification.objects.get(title="seen live").event_id)()
    assert live[0].id == last_id
    await sync_to_async(send_now)("missed")

    events = await on_connect(b, people.bob, last_event_id=last_id)
    # From the stream history (it still holds it), with its id; not again from the database.
    assert [n["title"] for n in notifications_in(events)] == ["missed"]
    assert all(e.id for e in events if e.event == "notification")


async def test_reconnect_after_history_loss_fills_the_gap_from_the_database(
    cluster: Cluster, people: People
) -> None:
    a, b = cluster.servers
    stream, _ = await connect(a, people.bob)
    try:
        await sync_to_async(send_now)("seen live")
        token = await sentinel()
        live = [e for e in await until(stream, token) if e.event == "notification"]
    finally:
        await stream.close()
    await sync_to_async(send_now)("missed")
    # The history is trimmed away: Redis keeps only what HISTORY_SIZE allows.
    client = redis.Redis.from_url(cluster.redis_url)
    client.xtrim(f"{cluster.prefix}:s:notifications", maxlen=0)
    client.close()

    events = await on_connect(b, people.bob, last_event_id=live[0].id)
    # Only what the client missed, once, and not what it had before its Last-Event-ID.
    assert [n["title"] for n in notifications_in(events)] == ["missed"]


# -- permissions --------------------------------------------------------------------------------


async def test_admin_send_by_non_staff_or_without_permission_is_refused(
    cluster: Cluster, people: People
) -> None:
    streams = [(await connect(server, people.bob))[0] for server in cluster.servers]

    def attempts() -> dict[str, int]:
        bob, bob_token = admin_client(people.bob)
        clerk, clerk_token = admin_client(people.clerk)
        existing = Notification.objects.create(title="existing")
        action = {
            "action": "send_selected",
            "_selected_action": [existing.pk],
            "post": "yes",
        }
        return {
            "non-staff add": bob.post(ADD_URL, form_data("x", bob_token, _send="1")).status_code,
            "non-staff action": bob.post(
                CHANGELIST_URL, {**action, "csrfmiddlewaretoken": bob_token}
            ).status_code,
            "no-permission add": clerk.post(
                ADD_URL, form_data("x", clerk_token, _send="1")
            ).status_code,
            "no-permission action": clerk.post(
                CHANGELIST_URL, {**action, "csrfmiddlewaretoken": clerk_token}
            ).status_code,
            "no-permission count": clerk.get(COUNT_URL, {"channel": "notifications"}).status_code,
            "no csrf": Client(enforce_csrf_checks=True)
            .post(ADD_URL, form_data("x", ""))
            .status_code,
        }

    try:
        codes = await sync_to_async(attempts)()
        token = await sentinel()
        received = [notifications_in(await until(s, token)) for s in streams]
    finally:
        for stream in streams:
            await stream.close()
    # The admin sends anyone who is not staff to its login page; staff without the
    # permission get 403; a POST without the CSRF token is refused before any view runs.
    assert codes == {
        "non-staff add": 302,
        "non-staff action": 302,
        "no-permission add": 403,
        "no-permission action": 403,
        "no-permission count": 403,
        "no csrf": 403,
    }
    assert received == [[], []]
    assert await Notification.objects.filter(sent_at__isnull=False).acount() == 0
    assert await NotificationSend.objects.acount() == 0


async def test_stream_user_channel_of_another_user_is_forbidden(
    cluster: Cluster, people: People
) -> None:
    server = cluster.servers[0]
    cookie = await sync_to_async(session_cookie)(people.bob)
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"}
    async with httpx.AsyncClient(timeout=10) as client:
        other = await client.get(
            f"{server.url}/sse/?channel=user:{people.alice.pk}", headers=headers
        )
        anonymous = await client.get(f"{server.url}/sse/?channel=user:{people.bob.pk}")
    assert other.status_code == 403
    assert other.json()["error"] == "forbidden"
    assert anonymous.status_code == 403
    stream, _ = await connect(server, people.bob, (f"user:{people.bob.pk}",))
    await stream.close()


async def test_notify_reaches_only_that_users_channel(cluster: Cluster, people: People) -> None:
    a, b = cluster.servers
    bob_stream, _ = await connect(a, people.bob, (f"user:{people.bob.pk}",))
    alice_stream, _ = await connect(b, people.alice, (f"user:{people.alice.pk}",))
    try:
        notification = await sync_to_async(notify)(
            people.bob, "Export ready", "Your CSV is waiting.", level="success", link="/exports/"
        )
        bob_token = await sentinel(f"user:{people.bob.pk}")
        alice_token = await sentinel(f"user:{people.alice.pk}")
        bob_got = notifications_in(await until(bob_stream, bob_token))
        alice_got = notifications_in(await until(alice_stream, alice_token))
    finally:
        await bob_stream.close()
        await alice_stream.close()
    assert [(n["id"], n["title"], n["level"], n["link"]) for n in bob_got] == [
        (notification.pk, "Export ready", "success", "/exports/")
    ]
    assert alice_got == []


# -- scheduled sends and scripts ----------------------------------------------------------------


async def test_send_due_notifications_twice_concurrently_sends_each_once(
    cluster: Cluster, people: People
) -> None:
    count = 30
    past = timezone.now() - timedelta(minutes=1)

    def schedule() -> list[int]:
        rows = [Notification.objects.create(title=f"due {i}", send_at=past) for i in range(count)]
        Notification.objects.create(title="later", send_at=timezone.now() + timedelta(hours=1))
        Notification.objects.create(
            title="expired", send_at=past, expires_at=timezone.now() - timedelta(seconds=1)
        )
        return [row.pk for row in rows]

    due = await sync_to_async(schedule)()
    streams = [(await connect(server, people.bob))[0] for server in cluster.servers]
    # Hold SQLite's write lock while both runs start, so that both list the same due rows and
    # then race for every claim once it is released.
    lock = sqlite3.connect(settings.DATABASES["default"]["NAME"], isolation_level=None)
    lock.execute("BEGIN IMMEDIATE")
    command = ["-m", "django", "send_due_notifications", "-v", "2"]
    procs = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            *command,
            cwd=ROOT,
            env=cluster.command_env(),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        for _ in range(2)
    ]
    try:
        firsts = [await asyncio.wait_for(p.stdout.readline(), 30) for p in procs]  # type: ignore[union-attr]
        assert firsts == [f"due: {count}\n".encode()] * 2
        lock.execute("ROLLBACK")
        outputs = []
        for proc in procs:
            out, _ = await asyncio.wait_for(proc.communicate(), 60)
            assert proc.returncode == 0, out.decode()
            outputs.append(out.decode())
        token = await sentinel()
        received = [notifications_in(await until(s, token)) for s in streams]
    finally:
        lock.close()
        for proc in procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        for stream in streams:
            await stream.close()
    sent_by_run = [
        {
            int(pk)
            for line in out.splitlines()
            if line.startswith("sent ids:")
            for pk in line.split(":")[1].split()
        }
        for out in outputs
    ]
    # Both runs went for every due row: what one did not send, the other had claimed.
    for out, sent_ids in zip(outputs, sent_by_run, strict=True):
        summary = f"sent {len(sent_ids)}, claimed elsewhere {count - len(sent_ids)}, failed 0"
        assert summary in out
    assert sent_by_run[0] | sent_by_run[1] == set(due)
    assert sent_by_run[0] & sent_by_run[1] == set()
    for got in received:
        assert sorted(n["id"] for n in got) == due
    audit = [s.notification_id async for s in NotificationSend.objects.all()]
    assert sorted(audit) == due
    assert await Notification.objects.filter(title="later", sent_at__isnull=True).aexists()
    assert await Notification.objects.filter(title="expired", sent_at__isnull=True).aexists()


async def test_broadcast_command_publishes_with_event_and_filter(
    cluster: Cluster, people: People
) -> None:
    streams = {
        name: (await connect(cluster.servers[i % 2], user))[0]
        for i, (name, user) in enumerate((("staff", people.staff), ("bob", people.bob)))
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "django", "broadcast", *args],
            cwd=ROOT,
            env=cluster.command_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )

    try:
        ok = run(
            "notifications",
            "maintenance at 18:00",
            "--event",
            "ops",
            "--filter",
            '{"is_staff": true}',
        )
        bad = run("notifications", "x", "--filter", '{"is_staff__gt": [1]}')
        token = await sentinel()
        received = {name: await until(s, token) for name, s in streams.items()}
    finally:
        for stream in streams.values():
            await stream.close()
    assert ok.returncode == 0, ok.stderr
    event_id = ok.stdout.strip()
    assert [(e.event, e.data, e.id) for e in received["staff"]] == [
        ("ops", "maintenance at 18:00", event_id)
    ]
    assert received["bob"] == []
    assert bad.returncode == 1
    assert "invalid --filter" in bad.stderr
    assert "is_staff__gt" in bad.stderr


# -- the admin ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field", "message"),
    [
        (
            {"audience": "filter", "state_filter": '{"is_staff": true'},
            "state_filter",
            "Enter a valid JSON",
        ),
        (
            {"audience": "filter", "state_filter": '{"is_staff__in": 3}'},
            "state_filter",
            "Invalid filter: filter.is_staff__in: &#x27;__in&#x27; needs a list of scalars",
        ),
        (
            {"audience": "filter", "state_filter": "[]"},
            "state_filter",
            "Invalid filter: filter: a filter is an object, got list",
        ),
        ({"audience": "filter"}, "state_filter", "Enter a filter"),
        ({"audience": "users"}, "users", "Choose at least one user"),
        ({"audience": "groups"}, "groups", "Choose at least one group"),
        ({"channel": "bad channel"}, "channel", "invalid channel name"),
        ({"link": "javascript:alert(1)"}, "link", "Enter an http(s) URL"),
    ],
)
def test_admin_form_invalid_audience_shows_clear_error(
    fields: dict[str, str], field: str, message: str
) -> None:
    people = make_people()
    client, token = admin_client(people.staff)
    response = client.post(ADD_URL, form_data("bad", token, _send="1", **fields))
    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert field in errors
    assert message in response.content.decode()
    assert not Notification.objects.exists()


def test_admin_changelist_shows_status_and_reach() -> None:
    people = make_people()
    now = timezone.now()
    Notification.objects.create(title="a draft")
    Notification.objects.create(title="a scheduled", send_at=now + timedelta(hours=1))
    Notification.objects.create(title="a sent", sent_at=now, reach=7)
    Notification.objects.create(
        title="an expired", sent_at=now, reach=3, expires_at=now - timedelta(seconds=1)
    )
    client, _ = admin_client(people.staff)
    html = client.get(CHANGELIST_URL).content.decode()
    for status in ("draft", "scheduled", "sent", "expired"):
        assert f'class="sn-status sn-status-{status}"' in html
    assert '<td class="field-reach_column">7</td>' in html
    assert '<td class="field-reach_column">-</td>' in html


def test_admin_change_form_has_send_button_and_live_count() -> None:
    people = make_people()
    client, _ = admin_client(people.staff)
    html = client.get(ADD_URL).content.decode()
    assert '<input type="submit" value="Save and send" name="_send"' in html
    assert 'id="sn-audience-count"' in html
    assert "stream_app/notifications.admin.js" in html
    sent = Notification.objects.create(title="sent once", sent_at=timezone.now())
    html = client.get(f"{CHANGELIST_URL}{sent.pk}/change/").content.decode()
    assert "Save and send again" in html


async def test_admin_send_selected_action_confirms_then_sends(
    cluster: Cluster, people: People
) -> None:
    def create() -> tuple[Notification, Notification, Notification]:
        return (
            Notification.objects.create(title="draft one"),
            send_now("sent before"),
            Notification.objects.create(
                title="gone", expires_at=timezone.now() - timedelta(seconds=1)
            ),
        )

    draft, sent, expired = await sync_to_async(create)()
    stream, _ = await connect(cluster.servers[0], people.bob)

    def act() -> tuple[str, int]:
        client, token = admin_client(people.staff)
        data = {
            "csrfmiddlewaretoken": token,
            "action": "send_selected",
            "_selected_action": [draft.pk, sent.pk, expired.pk],
        }
        confirm = client.post(CHANGELIST_URL, data).content.decode()
        done = client.post(CHANGELIST_URL, {**data, "post": "yes"})
        return confirm, done.status_code

    try:
        confirm, status = await sync_to_async(act)()
        token = await sentinel()
        got = notifications_in(await until(stream, token))
    finally:
        await stream.close()
    assert "Send notifications?" in confirm
    assert "1 of them has been sent before and will be sent again" in confirm
    assert "expired, will not be sent" in confirm
    assert status == 302
    assert sorted(n["title"] for n in got) == ["draft one", "sent before"]
    vias = [s.via async for s in NotificationSend.objects.filter(notification=sent).order_by("pk")]
    assert vias == ["code", "action"]


# -- markup -------------------------------------------------------------------------------------


def p(*children: Any) -> dict[str, Any]:
    return {"tag": "p", "children": list(children)}


def tag(name: str, *children: Any, **attributes: str) -> dict[str, Any]:
    return {"tag": name, **attributes, "children": list(children)}


BR = {"tag": "br"}


@pytest.mark.parametrize(
    ("body", "body_format", "nodes"),
    [
        ("a < b & c", "plain", [p("a < b & c")]),
        ("**x**", "plain", [p("**x**")]),
        ("line 1\nline 2\n\npara", "plain", [p("line 1", BR, "line 2"), p("para")]),
        (
            "**bold** and *it* and `<code>`",
            "markdown",
            [p(tag("strong", "bold"), " and ", tag("em", "it"), " and ", tag("code", "<code>"))],
        ),
        (
            "[docs](https://example.com/a?b=1&c=2)",
            "markdown",
            [p(tag("a", "docs", href="https://example.com/a?b=1&c=2"))],
        ),
        (
            "**[x](/a)** `*y*`",
            "markdown",
            [p(tag("strong", tag("a", "x", href="/a")), " ", tag("code", "*y*"))],
        ),
        ("[x](javascript:alert(1))", "markdown", [p("[x](javascript:alert(1))")]),
        ("[x](JaVaScRiPt:alert)", "markdown", [p("[x](JaVaScRiPt:alert)")]),
        ("[x](//evil.example)", "markdown", [p("[x](//evil.example)")]),
        ("[x](/\\evil.example)", "markdown", [p("[x](/\\evil.example)")]),
        ('[x](/a" onclick="y)', "markdown", [p('[x](/a" onclick="y)')]),
        ("<script>alert(1)</script>", "markdown", [p("<script>alert(1)</script>")]),
        (
            "- one\n- **two**",
            "markdown",
            [tag("ul", tag("li", "one"), tag("li", tag("strong", "two")))],
        ),
        ("", "markdown", []),
    ],
)
def test_body_nodes_are_data_with_safe_links_only(
    body: str, body_format: str, nodes: list[Any]
) -> None:
    assert body_nodes(body, body_format) == nodes


UNSAFE_LINKS = [
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    " javascript:alert(1)",
    "\tjavascript:alert(1)",
    "java\tscript:alert(1)",
    "java\nscript:alert(1)",
    "\x01javascript:alert(1)",
    "javascript\x00:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "DATA:text/html;base64,PHNjcmlwdD4=",
    "vbscript:msgbox(1)",
    "//evil.example/",
    "/\\evil.example/",
    "\\\\evil.example/",
    "/\t/evil.example/",
    "/\n/evil.example/",
    "/\r/evil.example/",
    "/\u00a0/evil.example/",
    "https:evil.example",
    "https://",
    "https:///evil.example",
    "ftp://example.com/",
    "mailto:a@example.com",
    "exports/1",
    "?next=//evil",
    "/" + "a" * 2000,
]
SAFE_LINKS = [
    "/",
    "/exports/?a=1#b",
    "http://example.com",
    "HTTPS://example.com/a b".replace(" ", "%20"),
]


@pytest.mark.parametrize("link", UNSAFE_LINKS)
def test_check_link_refuses_unsafe_links(link: str) -> None:
    assert not is_safe_link(link)
    with pytest.raises(ValueError, match="link must be an http\\(s\\) URL or a path"):
        check_link(link)


@pytest.mark.parametrize("link", ["", *SAFE_LINKS])
def test_check_link_accepts_http_urls_and_site_paths(link: str) -> None:
    assert check_link(link) == link


@pytest.mark.parametrize("link", UNSAFE_LINKS)
def test_notification_model_validator_refuses_unsafe_links(link: str) -> None:
    notification = Notification(title="t", link=link)
    with pytest.raises(ValidationError) as caught:
        notification.full_clean()
    assert "Enter an http(s) URL or a path starting with '/'" in str(caught.value)


@pytest.mark.parametrize("link", UNSAFE_LINKS)
def test_notify_refuses_unsafe_links_before_writing(link: str) -> None:
    bob = User.objects.create_user("bob")
    with pytest.raises(ValueError, match="link must be"):
        notify(bob, "t", link=link)
    assert not Notification.objects.exists()


@pytest.mark.parametrize("link", UNSAFE_LINKS)
async def test_anotify_refuses_unsafe_links_before_writing(link: str) -> None:
    bob = await User.objects.acreate(username="bob")
    with pytest.raises(ValueError, match="link must be"):
        await anotify(bob, "t", link=link)
    assert not await Notification.objects.aexists()


def test_send_refuses_a_row_with_an_unsafe_link_written_by_code() -> None:
    notification = Notification.objects.create(title="t", link="javascript:alert(1)")
    with pytest.raises(ValueError, match="link must be"):
        send_notification(notification)
    notification.refresh_from_db()
    assert notification.sent_at is None
    assert not NotificationSend.objects.exists()
