"""The stream endpoint under abuse: clients that leave at once, HEAD, and its caps.

Real servers (uvicorn, daphne, and Django's own handler) over raw sockets, so that a client
really leaves while the view is still running; the in-process tests drive the ASGI handler
with ``stream_app.testing.read_stream`` (or, to leave before the response starts, directly
with a ``receive`` that says the client has gone).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.core.handlers.asgi import ASGIHandler
from django.core.signals import request_finished
from django.test import AsyncRequestFactory, Client, override_settings

from stream_app import session as session_module
from stream_app import sessions
from stream_app.asgi import StreamASGIHandler
from stream_app.channels import channel_snapshot, get_channel
from stream_app.conf import DEFAULTS
from stream_app.signals import session_disconnected
from stream_app.testing import StreamReader, read_stream
from stream_app.views import stream_view
from tests import hooks
from tests import views as test_views
from tests.conftest import Server, fetch_json

pytestmark = pytest.mark.django_db(transaction=True)


async def _login_cookie(username: str) -> str:
    user = await User.objects.acreate(username=username)
    client = Client()
    await asyncio.to_thread(client.force_login, user)
    return str(client.cookies["sessionid"].value)


async def _connect_and_leave(
    port: int, target: str, cookie: str | None = None, method: str = "GET", delay: float = 0.0
) -> None:
    """Send one request and close the socket without reading the answer."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
    if cookie is not None:
        head += f"Cookie: sessionid={cookie}\r\n"
    writer.write(head.encode() + b"\r\n")
    await writer.drain()
    if delay:
        await asyncio.sleep(delay)
    writer.close()
    await writer.wait_closed()


async def _churn(port: int, target: str, count: int, cookie: str | None = None) -> None:
    """``count`` clients that leave at once or within a few ms, 20 at a time."""
    gate = asyncio.Semaphore(20)
    rng = random.Random(9)

    async def one() -> None:
        async with gate:
            await _connect_and_leave(port, target, cookie, delay=rng.choice([0, 0, 0.002, 0.01]))

    await asyncio.gather(*(one() for _ in range(count)))


async def _settled_channels(server: Server, timeout: float = 10) -> dict[str, int]:
    """The server's sessions per channel once nothing has changed for a moment."""
    deadline = time.monotonic() + timeout
    channels = (await fetch_json(f"{server.url}/t/state/"))["channels"]
    while channels and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        channels = (await fetch_json(f"{server.url}/t/state/"))["channels"]
    return dict(channels)


async def _open_streams(server: Server, cookie: str | None, count: int) -> list[int]:
    """Open ``count`` streams (as the user if ``cookie``) together, then close; the statuses."""
    cookies = {"sessionid": cookie} if cookie else {}
    async with httpx.AsyncClient(cookies=cookies, timeout=10) as http:
        responses = [
            await http.send(
                http.build_request("GET", f"{server.url}/sse/?channel=alpha"), stream=True
            )
            for _ in range(count)
        ]
        for response in responses:
            await response.aclose()
    return [r.status_code for r in responses]


@pytest.mark.parametrize(("kind", "plain"), [("uvicorn", ""), ("daphne", ""), ("uvicorn", "1")])
async def test_stream_view_clients_that_leave_at_once_leave_no_session_behind(
    server_factory: Callable[..., Server], kind: str, plain: str
) -> None:
    cookie = await _login_cookie("churner")
    server = server_factory(
        kind,
        {
            "STREAM_APP_JSON": json.dumps({"MAX_CONNECTIONS_PER_USER": 3}),
            "STREAM_PLAIN_DJANGO": plain,
        },
    )
    await _churn(server.port, "/sse/?channel=alpha", 150)
    await _churn(server.port, "/sse/?channel=alpha", 150, cookie)
    assert await _settled_channels(server) == {}
    state = await fetch_json(f"{server.url}/t/state/")
    assert state["open"] == 0
    # Every slot of the user was given back: three streams open, the fourth is refused.
    assert await _open_streams(server, cookie, 4) == [200, 200, 200, 429]


def _scope(target: str, cookie: str | None = None) -> dict[str, Any]:
    path, _, query = target.partition("?")
    raw = [(b"host", b"testserver"), (b"accept", b"text/event-stream")]
    if cookie is not None:
        raw.append((b"cookie", f"sessionid={cookie}".encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": query.encode(),
        "headers": raw,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }


async def _serve_in_process(
    handler: ASGIHandler, target: str, cookie: str | None = None
) -> list[dict[str, Any]]:
    """Serve one request with ``handler``; the client leaves once a connect hook is parked
    (``tests.hooks.park``) or the response has started. Returns what the handler sent."""
    sent: list[dict[str, Any]] = []
    parked = len(hooks.parked)
    requested = False

    async def receive() -> dict[str, Any]:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        for _ in range(2000):
            if len(hooks.parked) > parked or sent:
                break
            await asyncio.sleep(0.005)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await asyncio.wait_for(handler(_scope(target, cookie), receive, send), 10)
    return sent


def _stream_app(**options: Any) -> Any:
    return override_settings(STREAM_APP={**settings.STREAM_APP, **options})


@pytest.mark.parametrize("handler_class", [StreamASGIHandler, ASGIHandler])
async def test_stream_view_client_that_leaves_during_connect_hooks_leaves_no_session(
    handler_class: type[ASGIHandler],
) -> None:
    cookie = await _login_cookie("hooked")
    before = channel_snapshot()
    with _stream_app(CONNECT_HOOKS=["tests.hooks.park"], MAX_CONNECTIONS_PER_USER=1):
        handler = handler_class()
        for _ in range(3):
            sent = await _serve_in_process(handler, "/sse/?channel=alpha", cookie)
            assert sent == []
            # The view was cancelled and its session went with it.
            assert hooks.parked[-1].is_set()
            assert channel_snapshot() == before
    with _stream_app(CONNECT_HOOKS=[], MAX_CONNECTIONS_PER_USER=1):
        sent = await _serve_in_process(handler_class(), "/sse/?channel=alpha", cookie)
    assert sent[0]["status"] == 200


@pytest.mark.parametrize(("kind", "plain"), [("uvicorn", ""), ("daphne", ""), ("uvicorn", "1")])
async def test_stream_view_head_gives_its_connection_slot_back(
    server_factory: Callable[..., Server], kind: str, plain: str
) -> None:
    cookie = await _login_cookie("header")
    server = server_factory(
        kind,
        {
            "STREAM_APP_JSON": json.dumps({"MAX_CONNECTIONS_PER_USER": 2}),
            "STREAM_PLAIN_DJANGO": plain,
        },
    )
    async with httpx.AsyncClient(cookies={"sessionid": cookie}, timeout=10) as http:
        for _ in range(3):
            head = await http.head(f"{server.url}/sse/?channel=alpha")
            assert head.status_code == 200
            assert head.headers["content-type"].startswith("text/event-stream")
    assert await _settled_channels(server) == {}
    assert await _open_streams(server, cookie, 3) == [200, 200, 429]


async def test_stream_view_head_in_process_gives_its_slot_back() -> None:
    cookie = await _login_cookie("header-in-process")
    login = {"Cookie": f"sessionid={cookie}"}
    with _stream_app(MAX_CONNECTIONS_PER_USER=1):
        handler = StreamASGIHandler()
        for _ in range(2):
            async with read_stream(
                handler, "/sse/?channel=alpha", method="HEAD", headers=login
            ) as head:
                assert head.status_code == 200
                assert head.headers["Content-Type"].startswith("text/event-stream")
                assert await head.read_all() == []
                assert head.chunks == []
        async with read_stream(handler, "/sse/?channel=alpha", headers=login) as stream:
            assert stream.status_code == 200


@pytest.mark.parametrize("handler_class", [StreamASGIHandler, ASGIHandler])
@pytest.mark.parametrize("query", ["fail=1", "fail="])
async def test_a_session_whose_response_is_never_sent_leaves_its_channels(
    handler_class: type[ASGIHandler], query: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Django's own handler cannot tell us the response was dropped: the start timeout does.
    monkeypatch.setattr(session_module, "START_TIMEOUT", 0.2)
    beta = get_channel("beta")
    before = beta.session_count
    async with read_stream(handler_class(), f"/t/unsent/?{query}") as answer:
        assert answer.status_code == (500 if query == "fail=1" else 200)
    if handler_class is StreamASGIHandler:
        # Ours knows which sessions the request created: they end with it.
        assert beta.session_count == before
    for _ in range(100):
        if beta.session_count == before:
            break
        await asyncio.sleep(0.02)
    assert beta.session_count == before


async def _hold_streams(
    stack: contextlib.AsyncExitStack, handler: ASGIHandler, count: int, **options: Any
) -> list[StreamReader]:
    """Open ``count`` streams in process, one after the other, held until ``stack`` closes."""
    return [
        await stack.enter_async_context(read_stream(handler, "/sse/?channel=alpha", **options))
        for _ in range(count)
    ]


def _statuses(streams: list[StreamReader]) -> list[int]:
    return [stream.status_code for stream in streams]


async def test_stream_view_caps_anonymous_streams_per_address_by_default() -> None:
    cap = DEFAULTS["MAX_CONNECTIONS_PER_ADDRESS"]
    assert cap is not None
    handler = StreamASGIHandler()
    address = {"client_address": "10.1.0.1"}
    async with contextlib.AsyncExitStack() as first, contextlib.AsyncExitStack() as rest:
        streams = await _hold_streams(first, handler, 1, **address)
        streams += await _hold_streams(rest, handler, cap, **address)
        assert _statuses(streams) == [200] * cap + [429]
        assert streams[-1].json()["error"] == "too_many_connections"
        # Another address, and a logged-in user at the same address, are not counted here.
        async with contextlib.AsyncExitStack() as others:
            other = await _hold_streams(others, handler, 1, client_address="10.1.0.2")
            cookie = await _login_cookie("same-address")
            user = await _hold_streams(
                others, handler, 1, headers={"Cookie": f"sessionid={cookie}"}, **address
            )
            assert _statuses(other) == _statuses(user) == [200]
        # A stream that ends gives its slot back.
        await first.aclose()
        async with contextlib.AsyncExitStack() as again:
            assert _statuses(await _hold_streams(again, handler, 1, **address)) == [200]


@pytest.mark.parametrize(
    ("clients", "statuses"),
    [
        # One IPv6 client holds a whole /64: its addresses share one cap.
        (["2001:db8::1", "2001:db8::2", "2001:db8::3"], [200, 200, 429]),
        (["2001:db8::1", "2001:db8:0:1::1", "2001:db8:0:2::1"], [200, 200, 200]),
        (["::ffff:10.2.0.1", "10.2.0.1", "10.2.0.1"], [200, 200, 429]),
    ],
)
async def test_stream_view_address_cap_groups_ipv6_by_network(
    clients: list[str], statuses: list[int]
) -> None:
    handler = StreamASGIHandler()
    with _stream_app(MAX_CONNECTIONS_PER_ADDRESS=2):
        async with contextlib.AsyncExitStack() as stack:
            streams = [
                (await _hold_streams(stack, handler, 1, client_address=client))[0]
                for client in clients
            ]
            assert _statuses(streams) == statuses


@pytest.mark.parametrize(
    ("header", "forwarded", "statuses"),
    [
        # Not configured: the header is ignored, every request comes from REMOTE_ADDR.
        (None, ["10.3.0.1", "10.3.0.2", "10.3.0.3"], [200, 200, 429]),
        # The proxy's header: its last entry (what the proxy saw) names the client.
        ("X-Forwarded-For", ["10.3.0.1", "10.3.0.2", "10.3.0.3"], [200, 200, 200]),
        (
            "X-Forwarded-For",
            ["1.1.1.1, 10.3.0.9", "2.2.2.2, 10.3.0.9", "10.3.0.9"],
            [200, 200, 429],
        ),
        ("X-Real-IP", ["10.3.0.1", "10.3.0.2", "10.3.0.3"], [200, 200, 200]),
    ],
)
async def test_stream_view_address_comes_from_the_configured_proxy_header(
    header: str | None, forwarded: list[str], statuses: list[int]
) -> None:
    handler = StreamASGIHandler()
    with _stream_app(MAX_CONNECTIONS_PER_ADDRESS=2, CLIENT_ADDRESS_HEADER=header):
        async with contextlib.AsyncExitStack() as stack:
            streams = []
            for value in forwarded:
                streams += await _hold_streams(
                    stack,
                    handler,
                    1,
                    client_address="10.3.0.100",
                    headers={header or "X-Forwarded-For": value},
                )
            assert _statuses(streams) == statuses


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_stream_view_address_cap_over_a_real_server(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = server_factory(
        kind, {"STREAM_APP_JSON": json.dumps({"MAX_CONNECTIONS_PER_ADDRESS": 3})}
    )
    url = f"{server.url}/sse/?channel=alpha"
    async with httpx.AsyncClient(timeout=10) as http:
        streams = [await http.send(http.build_request("GET", url), stream=True) for _ in range(3)]
        try:
            assert [s.status_code for s in streams] == [200, 200, 200]
            refused = await http.get(url)
            assert refused.status_code == 429
            assert refused.json()["error"] == "too_many_connections"
            await streams.pop().aclose()
            for _ in range(100):
                again = await http.send(http.build_request("GET", url), stream=True)
                if again.status_code == 200:
                    break
                await again.aclose()
                await asyncio.sleep(0.02)
            streams.append(again)
            assert again.status_code == 200
        finally:
            for stream in streams:
                await stream.aclose()
    # A churn of clients that leave at once gives every slot back.
    await _churn(server.port, "/sse/?channel=alpha", 100)
    assert await _settled_channels(server) == {}
    assert await _open_streams(server, None, 4) == [200, 200, 200, 429]


async def _answer(target: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a request to the stream endpoint that is refused."""
    async with read_stream(StreamASGIHandler(), target) as answer:
        return answer.status_code, answer.json()


async def test_stream_view_refuses_too_many_channels() -> None:
    cap = DEFAULTS["MAX_CHANNELS_PER_STREAM"]
    many = "&".join(f"channel=alpha-{i}" for i in range(cap + 1))
    status, body = await _answer(f"/sse/?{many}")
    assert (status, body["error"]) == (400, "too_many_channels")
    assert str(cap) in body["message"]
    # Repeats count too: each one is work before the names are compared.
    status, body = await _answer("/sse/?" + "&".join(["channel=alpha"] * (cap + 1)))
    assert (status, body["error"]) == (400, "too_many_channels")
    with _stream_app(MAX_CHANNELS_PER_STREAM=2):
        status, body = await _answer("/sse/?channel=alpha&channel=beta&channel=news")
        assert (status, body["error"]) == (400, "too_many_channels")


async def test_stream_view_refuses_more_query_fields_than_django_allows() -> None:
    many = "&".join(f"x{i}=1" for i in range(settings.DATA_UPLOAD_MAX_NUMBER_FIELDS + 1))
    status, body = await _answer(f"/sse/?channel=alpha&{many}")
    assert (status, body["error"]) == (400, "invalid_request")


async def test_stream_view_does_not_echo_a_huge_channel_name() -> None:
    status, body = await _answer("/sse/?channel=" + "a" * 100_000 + "%20")
    assert (status, body["error"]) == (400, "invalid_channel")
    assert len(json.dumps(body)) < 500


async def _raw_status(port: int, target: str) -> tuple[int | None, bytes]:
    """Status and body of one raw request; (None, b"") when the server drops it unanswered."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    try:
        await writer.drain()
        answer = await asyncio.wait_for(reader.read(), 10)
    except ConnectionError:
        answer = b""
    finally:
        writer.close()
    if not answer:
        return None, b""
    head, _, body = answer.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_stream_view_hostile_query_strings_are_refused_and_the_worker_serves_on(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = server_factory(kind)
    fields = settings.DATA_UPLOAD_MAX_NUMBER_FIELDS
    hostile = {
        "channel=" + "a" * 100_000: "invalid_channel",
        "&".join(["channel=alpha"] * 5000): "invalid_request",
        "&".join(f"channel=a{i}" for i in range(fields // 2)): "too_many_channels",
        "channel=alpha&" + "&".join(f"x{i}=1" for i in range(fields + 1)): "invalid_request",
        "channel=alpha&x=" + "y" * 1_000_000: None,
    }
    for query, code in hostile.items():
        status, body = await _raw_status(server.port, f"/sse/?{query}")
        # The server's own limit on a request line (no answer, or its 4xx), else our JSON.
        if status is None or b"error" not in body:
            assert status is None or 400 <= status < 500, (kind, len(query), status)
            continue
        assert status == 400, (kind, len(query), body[:200])
        assert json.loads(body)["error"] == code
        assert len(body) < 1000
    assert await _open_streams(server, None, 1) == [200]


async def test_an_abandoned_session_runs_its_close_hooks_but_was_never_connected() -> None:
    request = AsyncRequestFactory().get("/sse/")
    session = sessions.Session(request, state={})
    closed: list[str | None] = []
    signalled: list[str] = []

    def on_disconnected(sender: object, session: sessions.Session, reason: str, **kw: Any) -> None:
        signalled.append(reason)

    session.on_close(lambda s: closed.append(s.close_reason))
    get_channel("beta").register(session)
    session_disconnected.connect(on_disconnected)
    try:
        session.abandon()
        session.abandon()
    finally:
        session_disconnected.disconnect(on_disconnected)
    assert closed == ["not_started"]
    assert session.is_closed
    # A hook added once it has ended runs at once (a view that learns it late still cleans up).
    session.on_close(lambda s: closed.append("late"))
    assert closed == ["not_started", "late"]
    assert session not in get_channel("beta").active_sessions
    # session_connected was never sent for it: neither is session_disconnected.
    assert signalled == []


async def test_stream_view_that_runs_on_after_its_client_left_gives_its_slot_back() -> None:
    async def anonymous() -> AnonymousUser:
        return AnonymousUser()

    with _stream_app(MAX_CONNECTIONS_PER_ADDRESS=1, CONNECT_HOOKS=[]):
        for _ in range(3):
            request = AsyncRequestFactory().get("/sse/?channel=alpha")
            # An address of this test's own: other tests' streams hold slots for 127.0.0.1.
            request.META["REMOTE_ADDR"] = "10.9.0.1"
            request.auser = anonymous  # type: ignore[attr-defined]
            with sessions.track_sessions() as created:
                # The handler gave up on the request (the client left) before the view ran,
                # as when the view still runs in the request's thread.
                created.end()
                response = await stream_view(request)
            assert response.status_code == 200
            assert isinstance(response, sessions.SessionResponse)
            assert response.session.is_closed


@pytest.mark.parametrize("target", ["/sse/?channel=alpha", "/t/idle/"])
async def test_a_client_that_leaves_as_the_view_returns_leaves_no_session(target: str) -> None:
    # The client leaves just as the response is ready: the handler's disconnect listener takes
    # the only http.disconnect the server sends, so the stream must not be started after it.
    loop = asyncio.get_running_loop()
    leave = asyncio.Event()
    requested = delivered = False

    def on_finished(**kwargs: Any) -> None:
        loop.call_soon_threadsafe(leave.set)

    async def receive() -> dict[str, Any]:
        nonlocal requested, delivered
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        if delivered:
            await asyncio.Event().wait()  # A server sends http.disconnect once.
        await leave.wait()
        # Delivered only when returned: a receive cancelled while it waited (Django 6.1's
        # listener, cancelled as the response is sent) loses nothing, as with a real server.
        delivered = True
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            leave.set()

    before = channel_snapshot(), test_views._hold.session_count
    request_finished.connect(on_finished)
    try:
        await asyncio.wait_for(StreamASGIHandler()(_scope(target), receive, send), 5)
    finally:
        request_finished.disconnect(on_finished)
    assert (channel_snapshot(), test_views._hold.session_count) == before


async def test_stream_view_without_any_channel_is_404(settings: Any) -> None:
    settings.STREAM_APP = {**settings.STREAM_APP, "DEFAULT_CHANNELS": []}
    response = await stream_view(AsyncRequestFactory().get("/sse/"))
    assert response.status_code == 404
    assert json.loads(response.content)["error"] == "unknown_channel"
