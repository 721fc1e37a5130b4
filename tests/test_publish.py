"""The HTTP publish endpoint: who may publish, and every kind of bad input."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client, override_settings

from stream_app.backends import reset_backend

pytestmark = pytest.mark.django_db
URL = "/stream/publish/"
TOKEN = {"HTTP_AUTHORIZATION": "Bearer test-token"}


@pytest.fixture(autouse=True)
def fresh_backend() -> None:
    reset_backend()


def post(client: Client, body: Any, **extra: Any) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(URL, data=data, content_type="application/json", **extra)


def test_publish_with_token_answers_the_id() -> None:
    response = post(Client(), {"channel": "news", "data": {"a": 1}, "event": "x"}, **TOKEN)
    assert response.status_code == 201
    assert response.json()["channel"] == "news"
    assert response.json()["id"]


@pytest.mark.parametrize(
    "headers",
    [{}, {"HTTP_AUTHORIZATION": "Bearer wrong"}, {"HTTP_AUTHORIZATION": "test-token"}],
)
def test_publish_without_valid_token_or_staff_is_forbidden(headers: dict[str, str]) -> None:
    response = post(Client(), {"channel": "news", "data": 1}, **headers)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"


@override_settings(STREAM_APP={"PUBLISH_TOKEN": None})
def test_publish_token_unset_refuses_every_bearer() -> None:
    assert post(Client(), {"channel": "news", "data": 1}, **TOKEN).status_code == 403


def user_with(username: str, *codenames: str, **flags: Any) -> User:
    """A user with these ``stream_app`` permissions (``publish``, ``publish_any``)."""
    user = User.objects.create_user(username, password="pw", **flags)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="stream_app", codename__in=codenames)
    )
    return user


def test_publish_staff_session_needs_csrf() -> None:
    staff = user_with("staff", "publish", is_staff=True)
    client = Client(enforce_csrf_checks=True)
    client.force_login(staff)
    response = post(client, {"channel": "news", "data": 1})
    assert response.status_code == 403
    assert response.json()["error"] == "csrf_failed"
    token = "a" * 32
    client.cookies["csrftoken"] = token
    response = post(client, {"channel": "news", "data": 1}, HTTP_X_CSRFTOKEN=token)
    assert response.status_code == 201


def test_publish_non_staff_session_is_forbidden() -> None:
    user = User.objects.create_user("user", password="pw")
    client = Client()
    client.force_login(user)
    assert post(client, {"channel": "news", "data": 1}).status_code == 403


# Who may publish where. "news" and "notifications" are PUBLIC_CHANNELS in the test settings;
# "user:<superuser>", "staff" and "generation:x" are private. ``is_staff`` alone grants nothing
# (as everywhere in Django): publishing is the permission ``stream_app.publish`` (public
# channels) or ``stream_app.publish_any`` (every channel); superusers hold every permission.
PUBLIC = ["news", "notifications"]
PRIVATE = ["user:{boss}", "staff", "generation:x"]
PUBLISHERS = [
    ("anonymous", set()),
    ("plain user", set()),
    ("staff without permission", set()),
    ("staff with publish", {*PUBLIC}),
    ("staff with publish_any", {*PUBLIC, *PRIVATE}),
    ("user with publish_any", {*PUBLIC, *PRIVATE}),
    ("superuser", {*PUBLIC, *PRIVATE}),
    ("token", {*PUBLIC, *PRIVATE}),
]


def publisher_client(who: str) -> tuple[Client, dict[str, str]]:
    """A client (and headers) publishing as ``who``; CSRF is checked and passes."""
    client = Client(enforce_csrf_checks=True)
    client.cookies["csrftoken"] = "c" * 32
    headers = {"HTTP_X_CSRFTOKEN": "c" * 32}
    users = {
        "plain user": lambda: user_with("plain"),
        "staff without permission": lambda: user_with("clerk", is_staff=True),
        "staff with publish": lambda: user_with("editor", "publish", is_staff=True),
        "staff with publish_any": lambda: user_with("ops", "publish_any", is_staff=True),
        "user with publish_any": lambda: user_with("service", "publish_any"),
        "superuser": lambda: User.objects.create_superuser("root", password="pw"),
    }
    if who == "token":
        headers.update(TOKEN)
    elif who in users:
        client.force_login(users[who]())
    return client, headers


@pytest.mark.parametrize(("who", "allowed"), PUBLISHERS, ids=[who for who, _ in PUBLISHERS])
def test_publish_permission_decides_the_channels(who: str, allowed: set[str]) -> None:
    boss = User.objects.create_superuser("boss", password="pw")
    client, headers = publisher_client(who)
    got = {}
    for template in PUBLIC + PRIVATE:
        channel = template.format(boss=boss.pk)
        response = post(client, {"channel": channel, "data": "x", "event": "e"}, **headers)
        got[template] = response.status_code
        if response.status_code == 403:
            assert response.json()["error"] == "forbidden"
            assert "stream_app.publish" in response.json()["message"]
    assert got == {name: 201 if name in allowed else 403 for name in PUBLIC + PRIVATE}


def test_publish_permissions_exist_with_their_names() -> None:
    perms = dict(
        Permission.objects.filter(
            content_type__app_label="stream_app", codename__startswith="publish"
        ).values_list("codename", "name")
    )
    assert perms == {
        "publish": "Can publish events to public channels",
        "publish_any": "Can publish events to any channel",
    }


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "invalid_json"),
        ("[1, 2]", 400, "invalid_request"),
        ({"data": 1}, 400, "invalid_request"),
        ({"channel": "news"}, 400, "invalid_request"),
        ({"channel": "news", "data": 1, "extra": 1}, 400, "invalid_request"),
        ({"channel": "bad name", "data": 1}, 400, "invalid_channel"),
        ({"channel": "news", "data": 1, "event": "a\nb"}, 400, "invalid_event"),
        ({"channel": "news", "data": 1, "event": 5}, 400, "invalid_event"),
        ({"channel": "news", "data": 1, "filter": {"x__in": 1}}, 400, "invalid_filter"),
        ({"channel": "news", "data": 1, "filter": "x"}, 400, "invalid_filter"),
        ({"channel": "news", "data": 1, "filter": {"plan__nee": "free"}}, 400, "invalid_filter"),
    ],
)
def test_publish_bad_input_is_a_clear_error(body: Any, status: int, code: str) -> None:
    response = post(Client(), body, **TOKEN)
    assert response.status_code == status
    assert response.json()["error"] == code
    assert response.json()["message"]


@override_settings(STREAM_APP={"MAX_MESSAGE_BYTES": 1000, "PUBLISH_TOKEN": "test-token"})
def test_publish_oversized_payload_is_413() -> None:
    response = post(Client(), {"channel": "news", "data": "x" * 2000}, **TOKEN)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"


def test_publish_needs_post() -> None:
    assert Client().get(URL, **TOKEN).status_code == 405


def test_publish_filter_over_the_limits_is_refused() -> None:
    # About 900 KB of filter: within the body limit, far over the filter limits.
    huge = {"any": [{"plan": "x" * 100} for _ in range(8000)]}
    response = post(Client(), {"channel": "news", "data": 1, "filter": huge}, **TOKEN)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_filter"
    assert "more than 256 conditions" in response.json()["message"]


@override_settings(STREAM_APP={"MAX_MESSAGE_BYTES": 1000, "PUBLISH_TOKEN": "test-token"})
def test_publish_body_far_over_the_limit_is_refused_before_it_is_parsed() -> None:
    # Past MAX_MESSAGE_BYTES plus room for the envelope, the body is not even read as JSON.
    response = post(Client(), {"channel": "news", "data": "x" * 6000}, **TOKEN)
    assert response.status_code == 413
    assert response.json()["error"] == "too_large"
    assert "5096 bytes" in response.json()["message"]
