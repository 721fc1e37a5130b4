"""Every page and endpoint of the demo, loaded as an anonymous visitor, a user, staff and a
superuser.

The URL patterns of ``project.urls`` (the chat, ``stream_app.urls``, the generation URLs, the
whole admin and the static files) are enumerated: each one has a case in ``CASES`` or a reason in
``SKIPPED``, and every case names a pattern that exists, so a new page cannot be forgotten
(``test_every_url_pattern_has_a_case``). Each case is loaded as the four roles and must answer
the status written for each: never a 5xx.

What answers before streaming runs in-process through Django's ``AsyncClient`` (Django's async
handler, so an async view that reads ``request.user`` synchronously raises
``SynchronousOnlyOperation`` here as on a server); streams run against a real uvicorn with the
roles' session cookies. The chat page is also loaded over real uvicorn and daphne servers as
every role (the path the bug of #1 was reported on).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import Group, Permission, User
from django.contrib.contenttypes.models import ContentType
from django.test import AsyncClient
from django.urls import URLPattern, URLResolver, get_resolver

from stream_app.models import Notification, NotificationSend
from tests.conftest import Server, start_server

pytestmark = pytest.mark.django_db(transaction=True)

ROLES = ("anonymous", "user", "staff", "superuser")
ALL_200 = (200, 200, 200, 200)
ALL_405 = (405, 405, 405, 405)
# Admin pages: visitors and non-staff users are sent to the login page.
STAFF_ONLY = (302, 302, 200, 200)
SUPERUSER_ONLY = (302, 302, 403, 200)
# A generation id that no generation has (32 characters, as real ones).
UNKNOWN_GENERATION = "0" * 32
CHAT_MESSAGES = {"messages": [{"role": "user", "content": "hello"}]}


@dataclass(frozen=True)
class Case:
    """One request to one URL pattern and the status each role must get."""

    pattern: str
    path: str  # may name objects of the ``world`` fixture: {group}, {user}, {notification}...
    expect: tuple[int, int, int, int]  # anonymous, user, staff, superuser
    method: str = "GET"
    form: dict[str, Any] | None = None
    body: Any = None  # sent as JSON
    stream: bool = False  # a 200 is an event stream: loaded over a real server

    @property
    def id(self) -> str:
        """The test id: method and path."""
        return f"{self.method} {self.path}"


def admin_model_cases(
    prefix: str,
    obj: str,
    *,
    staff: tuple[int, int, int, int, int, int],
    superuser: tuple[int, int, int, int, int, int] = (200, 200, 200, 200, 200, 302),
) -> list[Case]:
    """The six pages the admin has for each model: list, add, history, delete, change and the
    object's bare URL (a redirect to its change page). ``staff`` and ``superuser`` give the
    status of each page, in that order; visitors and users always go to the login page."""
    routes = [
        ("", ""),
        ("add/", "add/"),
        ("<path:object_id>/history/", f"{{{obj}}}/history/"),
        ("<path:object_id>/delete/", f"{{{obj}}}/delete/"),
        ("<path:object_id>/change/", f"{{{obj}}}/change/"),
        ("<path:object_id>/", f"{{{obj}}}/"),
    ]
    return [
        Case(f"admin/{prefix}{route}", f"/admin/{prefix}{path}", (302, 302, staff[i], superuser[i]))
        for i, (route, path) in enumerate(routes)
    ]


NOTIFICATION_FORM = {
    "title": "From the admin",
    "body": "Hello",
    "body_format": "plain",
    "level": "info",
    "channel": "notifications",
    "audience": "everyone",
    "state_filter": "",
    "link": "",
    "send_at_0": "",
    "send_at_1": "",
    "expires_at_0": "",
    "expires_at_1": "",
    "sends-TOTAL_FORMS": "0",
    "sends-INITIAL_FORMS": "0",
    "sends-MIN_NUM_FORMS": "0",
    "sends-MAX_NUM_FORMS": "1000",
    "_send": "Save and send",
}

CASES: list[Case] = [
    # -- the admin site --
    Case("admin/", "/admin/", STAFF_ONLY),
    # The login page shows a logged-in non-staff user why it cannot go on; staff go in.
    Case("admin/login/", "/admin/login/", (200, 200, 302, 302)),
    Case("admin/logout/", "/admin/logout/", (302, 302, 405, 405)),
    Case("admin/logout/", "/admin/logout/", (302, 302, 200, 200), method="POST", form={}),
    Case("admin/password_change/", "/admin/password_change/", STAFF_ONLY),
    Case("admin/password_change/done/", "/admin/password_change/done/", STAFF_ONLY),
    # The notification form's user picker: staff without access to users may not list them.
    Case(
        "admin/autocomplete/",
        "/admin/autocomplete/?app_label=stream_app&model_name=notification&field_name=users",
        SUPERUSER_ONLY,
    ),
    Case("admin/jsi18n/", "/admin/jsi18n/", STAFF_ONLY),
    # "View on site" of a user: users have no public URL.
    Case(
        "admin/r/<path:content_type_id>/<path:object_id>/",
        "/admin/r/{user_type}/{user}/",
        (302, 302, 404, 404),
    ),
    # The app index of an app with nothing the user may see is a 404.
    Case("admin/^(?P<app_label>auth|stream_app)/$", "/admin/auth/", (302, 302, 404, 200)),
    Case("admin/^(?P<app_label>auth|stream_app)/$", "/admin/stream_app/", STAFF_ONLY),
    Case("admin/(?P<url>.*)$", "/admin/no-such-page/", (302, 302, 404, 404)),
    # Staff here may manage notifications and read the send trail, not users or groups.
    *admin_model_cases("auth/group/", "group", staff=(403, 403, 403, 403, 403, 302)),
    *admin_model_cases("auth/user/", "user", staff=(403, 403, 403, 403, 403, 302)),
    Case("admin/auth/user/<id>/password/", "/admin/auth/user/{user}/password/", SUPERUSER_ONLY),
    *admin_model_cases("stream_app/notification/", "notification", staff=(200,) * 5 + (302,)),
    # The trail is written by sends only: nobody adds or deletes, the change page is read-only.
    *admin_model_cases(
        "stream_app/notificationsend/",
        "send",
        staff=(200, 403, 200, 403, 200, 302),
        superuser=(200, 403, 200, 403, 200, 302),
    ),
    Case(
        "admin/stream_app/notification/audience-count/",
        "/admin/stream_app/notification/audience-count/?channel=notifications&audience=everyone",
        STAFF_ONLY,
    ),
    # "Save and send" on a new and on an existing notification: a redirect to the change form
    # (a form with errors would be a 200).
    Case(
        "admin/stream_app/notification/add/",
        "/admin/stream_app/notification/add/",
        (302, 302, 302, 302),
        method="POST",
        form=NOTIFICATION_FORM,
    ),
    Case(
        "admin/stream_app/notification/<path:object_id>/change/",
        "/admin/stream_app/notification/{notification}/change/",
        (302, 302, 302, 302),
        method="POST",
        form=NOTIFICATION_FORM,
    ),
    # "Send selected": the confirmation page, then the send (back to the list).
    Case(
        "admin/stream_app/notification/",
        "/admin/stream_app/notification/",
        STAFF_ONLY,
        method="POST",
        form={"action": "send_selected", "_selected_action": "{notification}"},
    ),
    Case(
        "admin/stream_app/notification/",
        "/admin/stream_app/notification/",
        (302, 302, 302, 302),
        method="POST",
        form={"action": "send_selected", "_selected_action": "{notification}", "post": "yes"},
    ),
    # -- stream_app --
    Case("sse/", "/sse/", ALL_200, stream=True),
    Case("stream/", "/stream/?channel=news", ALL_200, stream=True),
    Case("stream/", "/stream/?channel=staff", (403, 403, 200, 200), stream=True),
    Case("stream/<str:channel>/", "/stream/notifications/", ALL_200, stream=True),
    Case("stream/<str:channel>/", "/stream/staff/", (403, 403, 200, 200), stream=True),
    Case("stream/<str:channel>/", "/stream/no-such-channel/", (404, 404, 404, 404), stream=True),
    Case("stream/publish/", "/stream/publish/", ALL_405),
    Case(
        "stream/publish/",
        "/stream/publish/",
        # is_staff alone allows no publishing: a permission does (stream_app.permissions).
        (403, 403, 403, 201),
        method="POST",
        body={"channel": "news", "data": "hello"},
    ),
    Case("stream/notifications/read/", "/stream/notifications/read/", ALL_405),
    Case(
        "stream/notifications/read/",
        "/stream/notifications/read/",
        (403, 200, 200, 200),
        method="POST",
        body={"ids": ["{notification}"]},
    ),
    Case("stream/notifications/demo/", "/stream/notifications/demo/", ALL_200),
    Case("stream/metrics/", "/stream/metrics/", ALL_200),
    Case("stream/health/", "/stream/health/", ALL_200),
    Case("stream/openapi.json", "/stream/openapi.json", ALL_200),
    # -- the chat --
    Case("", "/", ALL_200),
    Case("chat/send/", "/chat/send/", ALL_405),
    Case(
        "chat/send/",
        "/chat/send/",
        ALL_200,
        method="POST",
        body={"message": "hello"},
        stream=True,
    ),
    Case("chat/new/", "/chat/new/", ALL_405),
    Case("chat/new/", "/chat/new/", (302, 302, 302, 302), method="POST", form={}),
    # An unknown generation: 204 (EventSource stops), 404 to cancel.
    Case(
        "chat/generations/<str:generation_id>/stream/",
        f"/chat/generations/{UNKNOWN_GENERATION}/stream/",
        (204, 204, 204, 204),
    ),
    Case(
        "chat/generations/<str:generation_id>/cancel/",
        f"/chat/generations/{UNKNOWN_GENERATION}/cancel/",
        ALL_405,
    ),
    Case(
        "chat/generations/<str:generation_id>/cancel/",
        f"/chat/generations/{UNKNOWN_GENERATION}/cancel/",
        (404, 404, 404, 404),
        method="POST",
    ),
    # Off without CHAT_API_TOKEN (the tests set none): a session is not enough.
    Case(
        "v1/chat/completions",
        "/v1/chat/completions",
        (401, 401, 401, 401),
        method="POST",
        body={**CHAT_MESSAGES, "stream": True},
    ),
    Case("api/chat", "/api/chat", ALL_405),
    Case("api/chat", "/api/chat", ALL_200, method="POST", body=CHAT_MESSAGES, stream=True),
    Case("api/stream", "/api/stream", ALL_405),
    Case("api/stream", "/api/stream", ALL_200, method="POST", body=CHAT_MESSAGES, stream=True),
    Case("^static/(?P<path>.*)$", "/static/chat/chat.css", ALL_200),
    Case("^static/(?P<path>.*)$", "/static/chat/no-such-file.css", (404, 404, 404, 404)),
]

# Patterns deliberately not loaded, with the reason.
SKIPPED: dict[str, str] = {}


def url_patterns(resolver: URLResolver, prefix: str = "") -> Iterator[str]:
    """Every URL pattern under ``resolver``, as the concatenation of its routes."""
    for entry in resolver.url_patterns:
        if isinstance(entry, URLResolver):
            yield from url_patterns(entry, prefix + str(entry.pattern))
        else:
            assert isinstance(entry, URLPattern)
            yield prefix + str(entry.pattern)


def test_every_url_pattern_has_a_case() -> None:
    patterns = set(url_patterns(get_resolver("project.urls")))
    covered = {case.pattern for case in CASES}
    assert not covered & set(SKIPPED), "a pattern is both loaded and skipped"
    assert patterns - covered - set(SKIPPED) == set(), "URL patterns no case loads"
    assert (covered | set(SKIPPED)) - patterns == set(), "cases for patterns that do not exist"


@dataclass
class World:
    """The users of the four roles and one object of each kind the admin lists."""

    users: dict[str, User | None]
    names: dict[str, int] = field(default_factory=dict)

    def fill(self, value: Any) -> Any:
        """``value`` with the objects' ids put in for ``{group}``, ``{notification}``..."""
        if isinstance(value, str):
            return value.format(**self.names)
        if isinstance(value, dict):
            return {key: self.fill(item) for key, item in value.items()}
        if isinstance(value, list):
            return [self.fill(item) for item in value]
        return value


def make_world() -> World:
    """Users of the four roles; staff may manage notifications and read the send trail."""
    staff = User.objects.create_user("staff", password="pw", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="stream_app",
            codename__in=[
                "add_notification",
                "change_notification",
                "delete_notification",
                "view_notification",
                "view_notificationsend",
            ],
        )
    )
    users: dict[str, User | None] = {
        "anonymous": None,
        "user": User.objects.create_user("user", password="pw"),
        "staff": staff,
        "superuser": User.objects.create_superuser("boss", password="pw"),
    }
    notification = Notification.objects.create(title="Hello", channel="notifications")
    send = NotificationSend.objects.create(
        notification=notification,
        title="Hello",
        via="admin",
        channel="notifications",
        audience="all",
    )
    names = {
        "group": Group.objects.create(name="ops").pk,
        "user": users["user"].pk,  # type: ignore[union-attr]
        "user_type": ContentType.objects.get_for_model(User).pk,
        "notification": notification.pk,
        "send": send.pk,
    }
    return World(users, names)


@pytest.fixture
async def world() -> World:
    return await sync_to_async(make_world)()


async def in_process(case: Case, world: World, role: str) -> int:
    """The status of ``case`` for ``role``, through Django's async test client."""
    client = AsyncClient()
    user = world.users[role]
    if user is not None:
        await client.aforce_login(user)
    path = world.fill(case.path)
    if case.method == "GET":
        response = await client.get(path)
    elif case.body is not None:
        body = json.dumps(world.fill(case.body))
        response = await client.post(path, body, content_type="application/json")
    else:
        response = await client.post(path, world.fill(case.form or {}))
    return int(response.status_code)


@pytest.mark.parametrize("case", [c for c in CASES if not c.stream], ids=lambda c: c.id)
async def test_page_answers_each_role(case: Case, world: World) -> None:
    got = {role: await in_process(case, world, role) for role in ROLES}
    assert got == dict(zip(ROLES, case.expect, strict=True))


# -- over real servers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stream_server(django_db_setup: None) -> Iterator[Server]:
    """A uvicorn of its own (its generations keep running a while after each test)."""
    server = start_server("uvicorn", {"STREAM_OFFLINE_RATE": "0", "STREAM_KEEP_ALIVE": "1"})
    yield server
    server.stop()


async def session_cookie(user: User | None) -> dict[str, str]:
    """The cookies of a logged-in session of ``user`` (in the database the servers share)."""
    if user is None:
        return {}
    client = AsyncClient()
    await client.aforce_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


async def over_server(case: Case, world: World, role: str, server: Server) -> int:
    """The status of ``case`` for ``role`` from a real server; a 200 must be an event stream
    that sends its first event."""
    # Django accepts any well-formed secret as the CSRF cookie when the header repeats it.
    csrf = secrets.token_hex(16)
    cookies = {**await session_cookie(world.users[role]), settings.CSRF_COOKIE_NAME: csrf}
    body = None if case.body is None else world.fill(case.body)
    async with (
        httpx.AsyncClient(base_url=server.url, cookies=cookies, timeout=15) as client,
        client.stream(
            case.method, world.fill(case.path), json=body, headers={"X-CSRFToken": csrf}
        ) as response,
    ):
        if response.status_code == 200:
            assert response.headers["content-type"].startswith("text/event-stream")
            received = b""
            async for chunk in response.aiter_bytes():
                received += chunk
                if b"\ndata:" in received or received.startswith(b"data:"):
                    break
            assert b"data:" in received, (case.id, role, received)
        else:
            await response.aread()
        return response.status_code


@pytest.mark.parametrize("case", [c for c in CASES if c.stream], ids=lambda c: c.id)
async def test_stream_answers_each_role(case: Case, world: World, stream_server: Server) -> None:
    got = {role: await over_server(case, world, role, stream_server) for role in ROLES}
    assert got == dict(zip(ROLES, case.expect, strict=True))


async def test_chat_page_over_a_real_server_for_each_role(server: Server, world: World) -> None:
    # The async view renders {% notifications_ui %}: a logged-in user must not make it read
    # request.user synchronously (SynchronousOnlyOperation, a 500).
    for role in ROLES:
        cookies = await session_cookie(world.users[role])
        async with httpx.AsyncClient(base_url=server.url, cookies=cookies, timeout=15) as client:
            page = await client.get("/")
        assert page.status_code == 200, (server.kind, role, page.text[-2000:])
        assert 'id="composer"' in page.text
        assert "data-stream-notifications" in page.text
        user = world.users[role]
        if user is not None:
            # The notification UI was rendered for this user, not for an anonymous visitor.
            assert f"user:{user.pk}" in page.text
