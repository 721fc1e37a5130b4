"""The reported bad inputs, one by one, on every endpoint they reach: 4xx JSON, never a 500.

Through Django's ``AsyncClient`` on the demo's URLconf (``project.urls``) with CSRF enforced;
the client re-raises any exception a view lets escape. ``tests/test_fuzz_endpoints.py`` throws
generated requests at the same endpoints; these are the cases it must never lose.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from django.contrib.auth.models import User
from django.test import AsyncClient

from project.chat.models import Message
from stream_app.backends import reset_backend
from stream_app.models import Notification

pytestmark = pytest.mark.django_db(transaction=True)

CSRF = "c" * 32
PUBLISH = {"Authorization": "Bearer test-token"}
CHAT_TOKEN = "bad-input-chat-token"
# Deep enough for the standard library's RecursionError, small enough for every size limit.
DEEP = "[" * 10_000
# Every endpoint that reads a JSON body, with what it needs to get as far as the parser.
JSON_ENDPOINTS = {
    "publish (token)": ("/stream/publish/", "anonymous", PUBLISH),
    "publish (staff)": ("/stream/publish/", "staff", {}),
    "notifications/read": ("/stream/notifications/read/", "staff", {}),
    "chat/send": ("/chat/send/", "anonymous", {}),
    "api/chat": ("/api/chat", "anonymous", {}),
    "api/stream": ("/api/stream", "anonymous", {}),
    "v1/chat/completions": (
        "/v1/chat/completions",
        "anonymous",
        {"Authorization": f"Bearer {CHAT_TOKEN}"},
    ),
}
CHAT_ENDPOINTS = ["chat/send", "api/chat", "api/stream", "v1/chat/completions"]


@pytest.fixture(autouse=True)
def demo_urls(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings.ROOT_URLCONF = "project.urls"
    settings.CHAT_API_TOKEN = CHAT_TOKEN
    reset_backend()
    yield
    reset_backend()


async def client_as(who: str) -> AsyncClient:
    """A client holding a CSRF cookie, logged in as a staff user or anonymous."""
    client = AsyncClient(enforce_csrf_checks=True)
    if who == "staff":
        staff = await User.objects.acreate_superuser("staff", password="pw")
        await client.aforce_login(staff)
    client.cookies["csrftoken"] = CSRF
    return client


async def post(
    endpoint: str, body: bytes | str, content_type: str = "application/json", **headers: str
) -> Any:
    path, who, extra = JSON_ENDPOINTS[endpoint]
    client = await client_as(who)
    return await client.post(
        path,
        data=body,
        content_type=content_type,
        headers={"X-CSRFToken": CSRF, **extra, **headers},
    )


def error_of(response: Any, status: int) -> str:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    body = json.loads(response.content)
    assert isinstance(body["message"], str)
    code: str = body["error"]
    return code


@pytest.mark.parametrize("endpoint", sorted(JSON_ENDPOINTS))
@pytest.mark.parametrize("body", [DEEP, '{"a":' * 2000, "[" * 2000 + "]" * 2000])
async def test_deeply_nested_json_is_400(endpoint: str, body: str) -> None:
    assert error_of(await post(endpoint, body), 400) == "invalid_json"


@pytest.mark.parametrize("endpoint", sorted(JSON_ENDPOINTS))
async def test_a_body_over_djangos_upload_limit_is_413_json(endpoint: str, settings: Any) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    body = json.dumps({"channel": "news", "data": "x" * 20_000, "message": "hi", "ids": [1]})
    assert error_of(await post(endpoint, body), 413) == "too_large"


@pytest.mark.parametrize("endpoint", sorted(JSON_ENDPOINTS))
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_that_is_not_declared_json_is_415(endpoint: str, content_type: str) -> None:
    response = await post(endpoint, '{"channel": "news", "data": 1}', content_type)
    assert error_of(response, 415) == "unsupported_media_type"


@pytest.mark.parametrize(
    "ids",
    ["[1e999]", "[-1e999]", "[NaN]", f"[{10**30}]", f'["{10**30}"]', "[true]", "[0]", '["x"]'],
)
async def test_mark_read_refuses_ids_that_are_not_ids(ids: str) -> None:
    code = error_of(await post("notifications/read", f'{{"ids": {ids}}}'), 400)
    assert code in ("invalid_json", "invalid_ids")


async def test_mark_read_still_takes_ids_as_numbers_and_digit_strings() -> None:
    response = await post("notifications/read", '{"ids": [1, "2", 9223372036854775807]}')
    assert response.status_code == 200
    assert response.json() == {"read": []}
    assert not await Notification.objects.aexists()


def chat_body(endpoint: str, text: str) -> str:
    if endpoint == "chat/send":
        return json.dumps({"message": text})
    body: dict[str, Any] = {"messages": [{"role": "user", "content": text}], "stream": True}
    return json.dumps(body)


@pytest.mark.parametrize("endpoint", CHAT_ENDPOINTS)
@pytest.mark.parametrize("text", ["hi \ud800", "\udfff", "a\udc00b"])
async def test_a_lone_surrogate_in_a_chat_message_is_400(endpoint: str, text: str) -> None:
    assert error_of(await post(endpoint, chat_body(endpoint, text)), 400) == "invalid_json"
    assert not await Message.objects.aexists()


@pytest.mark.parametrize(
    "path",
    [
        "/sse/",
        "/stream/",
        "/stream/news/",
        "/stream/health/",
        "/stream/metrics/",
        "/stream/openapi.json",
        "/chat/generations/" + "a" * 32 + "/stream/",
    ],
)
@pytest.mark.parametrize("method", ["post", "put", "delete"])
async def test_other_methods_are_a_json_405_without_csrf(path: str, method: str) -> None:
    # Without a CSRF token: the refusal must not be Django's CSRF page.
    client = AsyncClient(enforce_csrf_checks=True)
    response = await getattr(client, method)(path, data=b"a=1", content_type="text/plain")
    assert error_of(response, 405) == "method_not_allowed"


@pytest.mark.parametrize(
    "path", ["/stream/notifications/read/", "/chat/generations/" + "a" * 32 + "/cancel/"]
)
async def test_session_posts_without_csrf_token_are_a_json_403(path: str, settings: Any) -> None:
    # Django's own CSRF failure page, not the demo's: the app answers JSON by itself.
    settings.CSRF_FAILURE_VIEW = "django.views.csrf.csrf_failure"
    client = await client_as("staff")
    response = await client.post(path, data='{"ids": [1]}', content_type="application/json")
    assert error_of(response, 403) == "csrf_failed"


async def test_a_cross_site_text_plain_post_by_staff_publishes_nothing() -> None:
    # What a <form enctype="text/plain"> on another site can send with the staff's cookies.
    client = await client_as("staff")
    response = await client.post(
        "/stream/publish/", data='{"channel": "news", "data": 1}', content_type="text/plain"
    )
    assert error_of(response, 403) == "csrf_failed"


async def test_a_garbled_multipart_post_by_staff_is_a_json_403() -> None:
    # The CSRF check reads form fields first: a body it cannot parse fails it, answered in JSON.
    client = await client_as("staff")
    response = await client.generic(
        "POST",
        "/stream/publish/",
        b"--x\r\nContent-Disposition: form-data\r\n\r\nnot closed",
        content_type="multipart/form-data; boundary=",
    )
    assert error_of(response, 403) == "csrf_failed"


async def test_a_disallowed_host_is_a_json_400() -> None:
    response = await AsyncClient().get("/stream/health/", headers={"Host": "evil.example"})
    assert error_of(response, 400) == "bad_request"
    assert b"evil" not in response.content


@pytest.mark.parametrize("header", ["Authorization", "Last-Event-ID", "Cookie", "X-CSRFToken"])
async def test_giant_headers_are_no_5xx(header: str) -> None:
    client = await client_as("anonymous")
    value = "Bearer " + "x" * 1_000_000
    for path in ("/sse/?channel=news", "/stream/health/"):
        response = await client.get(path, headers={header: value})
        assert response.status_code < 500
        response.close()
    response = await client.post(
        "/stream/publish/", data="{}", content_type="application/json", headers={header: value}
    )
    assert response.status_code == 403


async def test_the_chat_page_renders_for_a_logged_in_user() -> None:
    client = await client_as("staff")
    response = await client.get("/")
    assert response.status_code == 200
    assert b"data-stream-notifications" in response.content


COUNT = "/admin/stream_app/notification/audience-count/?channel=news&"


@pytest.mark.parametrize(
    "query",
    [
        "state_filter=" + quote(DEEP),
        "state_filter=" + quote('{"plan": NaN}'),
        "groups=" + "9" * 30,
        "users=" + "9" * 30,
        "users=x",
    ],
)
async def test_audience_count_refuses_bad_values_with_400(query: str) -> None:
    client = await client_as("staff")
    assert error_of(await client.get(COUNT + query), 400) == "invalid"


async def test_audience_count_is_get_only_and_json_for_staff_without_permission() -> None:
    client = await client_as("staff")
    assert error_of(await client.post(COUNT), 405) == "method_not_allowed"
    clerk = await User.objects.acreate_user("clerk", password="pw", is_staff=True)
    await client.aforce_login(clerk)
    assert error_of(await client.get(COUNT), 403) == "forbidden"


@pytest.mark.parametrize(
    "fields",
    [
        {"users": "x"},
        {"users": "9" * 30},
        {"groups": ":"},
        {"state_filter": DEEP},
        {"state_filter": '{"plan": Infinity}'},
    ],
)
async def test_the_notification_form_shows_errors_for_bad_values(fields: dict[str, str]) -> None:
    client = await client_as("staff")
    form = {"title": "t", "body": "b", "channel": "news", "audience": "everyone", **fields}
    response = await client.post(
        "/admin/stream_app/notification/add/",
        data={**form, "csrfmiddlewaretoken": CSRF},
    )
    assert response.status_code == 200
    assert b"errorlist" in response.content
    assert not await Notification.objects.aexists()


@pytest.mark.parametrize("query", ["users=:", "groups=9999999999999999999999", "users=1,x"])
async def test_the_notification_add_page_ignores_initial_values_that_are_not_ids(
    query: str,
) -> None:
    client = await client_as("staff")
    response = await client.get(f"/admin/stream_app/notification/add/?{query}")
    assert response.status_code == 200
