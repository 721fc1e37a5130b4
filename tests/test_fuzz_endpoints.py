"""Every URL of the demo project, fuzzed in process: no 5xx, and JSON errors from the API.

The routes are enumerated from ``project.urls`` (so from ``stream_app.urls`` and
``stream_app.llm.urls`` too); each is either in ``TARGETS`` or in ``not_fuzzed`` with its reason,
and a test checks that nothing is forgotten. Hypothesis draws whole requests: the method, the
path's arguments, a query string (``channel=``, ``lastEventId=``, garbage), headers
(``Last-Event-ID``, ``Authorization``, ``Cookie``, ``Accept``, ``Origin``, ``Host``, giant ones)
and a body (random bytes; JSON of every type nested up to 100,000 levels, with huge and
non-finite numbers and lone surrogates; the endpoint's own shape with wrong types in it; form
and multipart bodies; bodies over the size limits) under assorted content types, sent by an
anonymous visitor and by a staff user, with a valid CSRF token, a wrong one or none, and with the
endpoint's bearer token (``PUBLISH_TOKEN``, ``CHAT_API_TOKEN``) or a wrong one.

The routes whose input reaches the backend (channel names, ``Last-Event-ID``, generation ids)
are fuzzed a second time on the Redis backend (a private ``redis-server``). Examples per
endpoint and identity: ``STREAM_FUZZ_EXAMPLES`` (40; a longer hunt: 1000).

Requests go through Django's ``AsyncClient`` (real ``ASGIRequest`` objects, the demo's whole
middleware stack, CSRF enforced), which re-raises any exception a view lets escape. Asserted:

- no status of 500 or more;
- ``api`` and ``stream`` endpoints answer every 4xx with ``Content-Type: application/json`` and a
  JSON object holding ``error`` (``{"error": code, "message": ...}``, or OpenAI's
  ``{"error": {"message": ...}}`` shape on ``/v1/chat/completions``);
- ``page`` endpoints (the chat page, the notifications demo page, the admin's notification form,
  static files) may answer a 4xx as HTML: Django's 404 page for a missing static file, its 403
  page for a CSRF failure on a page, the admin's form errors;
- a stream that starts is checked by its status and headers only, then closed at once.

Not covered here, on purpose: ``Content-Length`` values that disagree with the body (ASGI
servers refuse them before Django sees the request; ``tests/test_requests.py`` covers the
parser's handling) and control characters in header values (refused by the servers too).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import quote, urlencode

import pytest
from django.contrib.auth.models import Permission, User
from django.test import AsyncClient
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

from stream_app.backends import close_backends, reset_backend
from stream_app.llm.generations import shutdown_generations
from tests.conftest import RedisServer

pytestmark = pytest.mark.django_db(transaction=True)

PUBLISH_TOKEN = "test-token"
CHAT_TOKEN = "fuzz-chat-token"
CSRF = "f" * 32
# Small limits, so that bodies past them are cheap to generate.
UPLOAD_LIMIT = 8192
MESSAGE_LIMIT = 4096
# Per endpoint and identity; STREAM_FUZZ_EXAMPLES=1000 for a longer hunt.
EXAMPLES = int(os.environ.get("STREAM_FUZZ_EXAMPLES", "40"))

# -- values ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Raw:
    """JSON text put into a document as is: literals ``json.dumps`` cannot write."""

    text: str


def dump(value: Any) -> str:
    """JSON text of ``value``; lone surrogates come out as ``\\udxxx`` escapes."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, list):
        return "[" + ",".join(dump(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k) + ":" + dump(v) for k, v in value.items()) + "}"
    return json.dumps(value, allow_nan=True)


SURROGATES = ["\ud800", "\udbff", "\udc00", "\udfff"]
texts = st.text(max_size=30) | st.builds(
    lambda head, surrogate, tail: head + surrogate + tail,
    st.text(max_size=5),
    st.sampled_from(SURROGATES),
    st.text(max_size=5),
)
raw_literals = st.sampled_from(
    [
        "1e999",
        "-1e999",
        "NaN",
        "Infinity",
        "-Infinity",
        "1" + "0" * 30,
        "9" * 5000,
        "1e-999",
        "-0",
        '"\\ud800"',
        '"x\\udfff"',
        "[" * 100_000,
        '{"a":' * 50_000,
        "[" * 70 + "]" * 70,
    ]
).map(Raw) | st.integers(1, 100_000).map(lambda n: Raw("[" * n + "]" * n))
leaves = (
    st.none() | st.booleans() | st.integers(-(10**40), 10**40) | st.floats() | texts | raw_literals
)
values = st.recursive(
    leaves,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(texts, children, max_size=4),
    max_leaves=12,
)


def shaped(**fields: SearchStrategy[Any]) -> SearchStrategy[bytes]:
    """An object with some of ``fields`` (each value drawn from its strategy), maybe one extra."""
    return st.fixed_dictionaries({}, optional={**fields, "unexpected": values}).map(
        lambda obj: dump(obj).encode()
    )


channel_names = st.sampled_from(["news", "staff", "user:1", "alpha", "", "x" * 101, "a b"]) | texts
messages = (
    st.lists(
        st.fixed_dictionaries(
            {"role": st.sampled_from(["user", "assistant", "system", "tool"]) | values},
            optional={
                "content": texts | values,
                "parts": st.lists(
                    st.fixed_dictionaries(
                        {"type": st.sampled_from(["text", "image"]) | values},
                        optional={"text": texts | values},
                    ),
                    max_size=3,
                )
                | values,
            },
        ),
        max_size=3,
    )
    | values
)
chat_fields: dict[str, SearchStrategy[Any]] = {
    "messages": messages,
    "stream": st.just(True) | values,
    "model": texts | values,
    "temperature": values,
    "stream_options": st.just({"include_usage": True}) | values,
    "tools": values,
    "messageId": texts | values,
}

# -- request parts --------------------------------------------------------------------------

CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/json",
        "application/json; charset=utf-8",
        "application/json; charset=latin-1",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=fuzz",
        "multipart/form-data",
        "application/octet-stream",
    ]
) | st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
forms = (
    st.lists(st.tuples(texts.filter(str.isprintable), texts), max_size=5).map(
        lambda pairs: urlencode(pairs, errors="surrogatepass").encode()
    )
    | st.just(b"a=1&" * 1200)
    | st.binary(max_size=200).map(
        lambda data: (
            b'--fuzz\r\nContent-Disposition: form-data; name="a"\r\n\r\n'
            + data
            + b"\r\n--fuzz--\r\n"
        )
    )
)
oversized = st.sampled_from(
    [
        b'{"channel": "news", "data": "' + b"x" * MESSAGE_LIMIT * 2 + b'"}',
        b'{"ids": [' + b"1," * UPLOAD_LIMIT + b"1]}",
        b" " * (UPLOAD_LIMIT + 1),
    ]
)
header_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60
) | st.just("x" * 70_000)
query_keys = st.sampled_from(
    ["channel", "lastEventId", "url", "plan", "tag", "audience", "users", "groups", "state_filter"]
) | st.text(max_size=8)
query_values = (
    st.text(max_size=40)
    | st.sampled_from(["1", "0", "-1", "9" * 30, "everyone", "users", "groups", "filter"])
    | values.map(dump)
).map(lambda s: s.encode("utf-8", "surrogatepass"))
queries = st.lists(st.tuples(query_keys, query_values), max_size=4).map(
    lambda pairs: urlencode([(k.encode("utf-8", "surrogatepass"), v) for k, v in pairs])
) | st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E), max_size=40)
segments = st.sampled_from(["news", "staff", "user:1", "..", "%00"]) | st.binary(
    min_size=1, max_size=40
).filter(lambda b: b"/" not in b).map(lambda b: quote(b, safe=""))
generation_ids = st.text("0123456789abcdef", min_size=32, max_size=32) | segments


def form(**fields: SearchStrategy[Any]) -> SearchStrategy[str]:
    """URL-encoded pairs: some of ``fields``, some given twice, in a query string or a body."""
    return st.lists(
        st.sampled_from(sorted(fields)).flatmap(
            lambda name: fields[name].map(lambda value: (name, dump_text(value)))
        ),
        max_size=8,
    ).map(lambda pairs: urlencode([(k, v.encode("utf-8", "surrogatepass")) for k, v in pairs]))


def dump_text(value: Any) -> str:
    """A form value: text as is, anything else as JSON text."""
    return value if isinstance(value, str) else dump(value)


ids_text = st.sampled_from(["1", "0", "-1", "9" * 30, "9" * 5000, "x", "1.5"]) | st.integers().map(
    str
)
audience_fields: dict[str, SearchStrategy[Any]] = {
    "channel": channel_names,
    "audience": st.sampled_from(["everyone", "staff", "superusers", "users", "groups", "filter"])
    | texts,
    "users": ids_text,
    "groups": ids_text,
    "state_filter": values,
}


@dataclass(frozen=True)
class Target:
    """How one route is fuzzed."""

    kind: Literal["api", "stream", "page"]
    methods: tuple[str, ...]
    path: SearchStrategy[str]
    body: SearchStrategy[bytes] = field(default_factory=st.nothing)
    token: str | None = None
    query: SearchStrategy[str] = field(default_factory=lambda: queries)
    content_types: SearchStrategy[str] = field(default_factory=lambda: CONTENT_TYPES)


def json_target(path: str, body: SearchStrategy[bytes], token: str | None = None) -> Target:
    return Target("api", ("POST",), st.just(path), body, token)


TARGETS: dict[str, Target] = {
    "": Target("page", ("GET",), st.just("/")),
    "sse/": Target("stream", ("GET", "HEAD"), st.just("/sse/")),
    "stream/": Target("stream", ("GET", "HEAD"), st.just("/stream/")),
    "stream/<str:channel>/": Target(
        "stream", ("GET", "HEAD"), segments.map(lambda s: f"/stream/{s}/")
    ),
    "stream/publish/": json_target(
        "/stream/publish/",
        shaped(channel=channel_names, data=values, event=texts | values, filter=values),
        PUBLISH_TOKEN,
    ),
    "stream/notifications/read/": json_target(
        "/stream/notifications/read/",
        shaped(ids=st.lists(values | st.integers() | st.integers().map(str), max_size=5) | values),
    ),
    "stream/notifications/demo/": Target("page", ("GET",), st.just("/stream/notifications/demo/")),
    "stream/metrics/": Target("api", ("GET",), st.just("/stream/metrics/")),
    "stream/health/": Target("api", ("GET",), st.just("/stream/health/")),
    "stream/openapi.json": Target("api", ("GET",), st.just("/stream/openapi.json")),
    "chat/send/": Target(
        "stream", ("POST",), st.just("/chat/send/"), shaped(message=texts | values)
    ),
    "chat/new/": Target("api", ("POST",), st.just("/chat/new/")),
    "chat/generations/<str:generation_id>/stream/": Target(
        "stream", ("GET", "HEAD"), generation_ids.map(lambda g: f"/chat/generations/{g}/stream/")
    ),
    "chat/generations/<str:generation_id>/cancel/": Target(
        "api", ("POST",), generation_ids.map(lambda g: f"/chat/generations/{g}/cancel/")
    ),
    "v1/chat/completions": Target(
        "stream", ("POST",), st.just("/v1/chat/completions"), shaped(**chat_fields), CHAT_TOKEN
    ),
    "api/chat": Target(
        "stream", ("POST",), st.just("/api/chat"), shaped(**chat_fields), CHAT_TOKEN
    ),
    "api/stream": Target(
        "stream", ("POST",), st.just("/api/stream"), shaped(**chat_fields), CHAT_TOKEN
    ),
    "admin/stream_app/notification/audience-count/": Target(
        "api",
        ("GET",),
        st.just("/admin/stream_app/notification/audience-count/"),
        query=form(**audience_fields) | queries,
    ),
    "admin/stream_app/notification/add/": Target(
        "page",
        ("POST",),
        st.just("/admin/stream_app/notification/add/"),
        body=form(
            title=texts,
            body=texts,
            body_format=st.sampled_from(["text", "markdown"]) | texts,
            level=st.sampled_from(["info", "warning"]) | texts,
            link=texts,
            send_at=st.sampled_from(["2030-01-01 00:00", "x", "9999-99-99"]) | texts,
            expires_at=st.sampled_from(["2000-01-01 00:00", ""]) | texts,
            csrfmiddlewaretoken=st.just(CSRF),
            **audience_fields,
        ).map(str.encode),
        content_types=st.just("application/x-www-form-urlencoded") | CONTENT_TYPES,
    ),
    "^static/(?P<path>.*)$": Target(
        "page",
        ("GET",),
        st.lists(segments, min_size=1, max_size=4).map(lambda parts: "/static/" + "/".join(parts)),
    ),
}
OTHER_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")


def not_fuzzed(route: str) -> str | None:
    """Why a route of ``project.urls`` is not fuzzed (None: it must be in ``TARGETS``)."""
    if route.startswith("admin/") and route not in TARGETS:
        return (
            "Django's own admin views (staff-only HTML; ModelAdmin options, not request "
            "parsing of ours): stream_app's admin input goes through the notification form "
            "(fuzzed through add/, the change view uses the same form) and audience-count/"
        )
    return None


def walk(patterns: list[Any], prefix: str = "") -> Iterator[str]:
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            assert isinstance(pattern, URLPattern)
            yield prefix + str(pattern.pattern)


def test_every_route_of_the_demo_is_fuzzed_or_has_a_reason() -> None:
    routes = list(walk(get_resolver("project.urls").url_patterns))
    forgotten = [r for r in routes if r not in TARGETS and not_fuzzed(r) is None]
    assert not forgotten
    assert set(TARGETS) <= set(routes)


# -- the harness ----------------------------------------------------------------------------


@dataclass
class Identity:
    """Who sends the requests: the session cookie of a logged-in staff user, or nobody."""

    name: str
    session_cookie: str | None


@pytest.fixture
def fuzz_settings(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    settings.ROOT_URLCONF = "project.urls"
    settings.CHAT_API_TOKEN = CHAT_TOKEN
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = UPLOAD_LIMIT
    settings.STREAM_APP = {
        **settings.STREAM_APP,
        "PUBLISH_TOKEN": PUBLISH_TOKEN,
        "MAX_MESSAGE_BYTES": MESSAGE_LIMIT,
        "LLM_OFFLINE_RATE": 0,
    }
    reset_backend()
    yield
    reset_backend()


@pytest.fixture
async def redis_backend(settings: Any, redis_server: RedisServer) -> AsyncIterator[None]:
    """The Redis backend (ids, replay and generations on a real Redis) for this test."""
    if redis_server.proc is None:
        redis_server.start()
    settings.STREAM_APP = {
        **settings.STREAM_APP,
        "BACKEND": "stream_app.backends.redis.RedisBackend",
        "REDIS_URL": redis_server.url,
        "KEY_PREFIX": f"fuzz{time.monotonic_ns()}",
    }
    reset_backend()
    yield
    await close_backends()
    reset_backend()


@pytest.fixture
async def generations_stopped() -> AsyncIterator[None]:
    yield
    # Answers started by chat/send run on without a listener: stop them with the test's loop.
    await shutdown_generations(timeout=5)


@pytest.fixture
async def identity(request: pytest.FixtureRequest) -> Identity:
    name: str = request.param
    if name == "anonymous":
        return Identity(name, None)
    staff = await User.objects.acreate_user("fuzz-staff", password="pw", is_staff=True)
    # A staff editor of notifications: the admin form and its audience count are open to it.
    async for permission in Permission.objects.filter(
        content_type__app_label="stream_app", codename__endswith="_notification"
    ):
        await staff.user_permissions.aadd(permission)
    client = AsyncClient()
    await client.aforce_login(staff)
    return Identity(name, client.cookies["sessionid"].value)


@st.composite
def fuzzed_requests(draw: st.DrawFn, target: Target) -> dict[str, Any]:
    method = draw(st.sampled_from(target.methods * 4 + OTHER_METHODS))
    path = draw(target.path)
    query = draw(st.none() | target.query)
    if query:
        path = f"{path}?{query}"
    headers: dict[str, str] = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "Last-Event-ID": st.sampled_from(
                    ["1-1", "0-0", "x" * 300, "99999999999999999999-1", "1-", "-1", "1-1-1", "+"]
                )
                | header_text,
                "Authorization": st.sampled_from(
                    [f"Bearer {target.token}", "Bearer wrong", "Bearer ", "Basic eDp5"]
                )
                | header_text,
                "Cookie": st.sampled_from(["sessionid=garbage", "csrftoken=x; a=b", "=;;="])
                | header_text,
                "Accept": st.sampled_from(
                    ["application/json", "text/html", "text/event-stream", "*/*"]
                )
                | header_text,
                "Origin": st.sampled_from(["http://testserver", "http://evil.example", "null"])
                | header_text,
                "Host": st.sampled_from(["evil.example", "testserver:99999", ""]) | header_text,
                "X-Forwarded-For": header_text,
            },
        )
    )
    csrf = draw(st.sampled_from(["valid", "valid", "valid", "wrong", "none"]))
    if csrf != "none":
        headers["X-CSRFToken"] = CSRF if csrf == "valid" else "w" * 32
    body = b""
    content_type = "application/json"
    if method not in ("GET", "HEAD") or draw(st.integers(0, 9)) == 0:
        body = draw(
            target.body
            | target.body
            | values.map(lambda v: dump(v).encode())
            | st.binary(max_size=300)
            | forms
            | oversized
        )
        content_type = draw(target.content_types)
    return {
        "method": method,
        "path": path,
        "data": body,
        "content_type": content_type,
        "headers": headers,
        "csrf_cookie": csrf != "none",
    }


async def send(identity: Identity, request: dict[str, Any]) -> Any:
    client = AsyncClient(enforce_csrf_checks=True)
    if request["csrf_cookie"]:
        client.cookies["csrftoken"] = CSRF
    if identity.session_cookie is not None:
        client.cookies["sessionid"] = identity.session_cookie
    return await client.generic(
        request["method"],
        request["path"],
        data=request["data"],
        content_type=request["content_type"],
        headers=request["headers"],
    )


async def end_stream(response: Any) -> None:
    """Start a streaming response, then close it at once (as a client that leaves)."""
    if not response.is_async:
        list(response.streaming_content)
        return
    chunks = aiter(response.streaming_content)
    session = getattr(response, "session", None)
    try:
        await asyncio.wait_for(anext(chunks, b""), 5)
        if session is not None:
            session.close()
        async with asyncio.timeout(5):
            async for _ in chunks:
                pass
    finally:
        await chunks.aclose()


def check(target: Target, method: str, response: Any) -> None:
    status = response.status_code
    assert status < 500, f"{status}: {getattr(response, 'content', b'')[:300]!r}"
    if status == 200 and target.kind == "stream":
        assert response["Content-Type"].startswith("text/event-stream")
        assert response["Cache-Control"] == "no-cache"
    if status < 400 or target.kind == "page":
        return
    assert response["Content-Type"].startswith("application/json"), response["Content-Type"]
    if method == "HEAD":
        return
    body = json.loads(response.content)
    assert isinstance(body, dict)
    error = body.get("error")
    if isinstance(error, dict):  # OpenAI's error shape, on /v1/chat/completions
        assert isinstance(error.get("message"), str)
    else:
        assert isinstance(error, str)
        assert isinstance(body.get("message"), str)


async def fuzz_once(route: str, identity: Identity, data: st.DataObject) -> None:
    """Send one generated request to ``route`` as ``identity`` and check the answer."""
    target = TARGETS[route]
    request = data.draw(fuzzed_requests(target))
    note(repr({**request, "data": request["data"][:200]}))
    response = await send(identity, request)
    if response.streaming:
        await end_stream(response)
    check(target, request["method"], response)


@pytest.mark.usefixtures("fuzz_settings", "generations_stopped")
@pytest.mark.parametrize("identity", ["anonymous", "staff"], indirect=True)
@pytest.mark.parametrize("route", sorted(TARGETS))
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.large_base_example,
    ],
)
@given(data=st.data())
async def test_endpoint_answers_fuzzed_requests_without_5xx(
    route: str, identity: Identity, data: st.DataObject
) -> None:
    await fuzz_once(route, identity, data)


# The routes whose input reaches the backend (channel names, Last-Event-ID, generation ids):
# fuzzed again on Redis, where an id becomes an XRANGE argument.
REDIS_ROUTES = [
    "sse/",
    "stream/<str:channel>/",
    "stream/publish/",
    "chat/generations/<str:generation_id>/stream/",
    "chat/generations/<str:generation_id>/cancel/",
]


@pytest.mark.usefixtures("fuzz_settings", "redis_backend", "generations_stopped")
@pytest.mark.parametrize("identity", ["anonymous", "staff"], indirect=True)
@pytest.mark.parametrize("route", REDIS_ROUTES)
@settings(
    max_examples=EXAMPLES // 2,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
@given(data=st.data())
async def test_endpoint_on_redis_answers_fuzzed_requests_without_5xx(
    route: str, identity: Identity, data: st.DataObject
) -> None:
    await fuzz_once(route, identity, data)
