"""stream_app.testing in process: read_stream through AsyncClient and through ASGI handlers, and
the pytest plugin's fixtures (stream_backend, broadcasts, stream_client).

Every transport is a real one: Django's AsyncClient, Django's ASGIHandler and stream_app's
StreamASGIHandler, called as a server calls them; the views are the project's own.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from django.core.handlers.asgi import ASGIHandler
from django.db import connection
from django.http import HttpRequest, StreamingHttpResponse
from django.test import AsyncClient, Client, override_settings
from django.urls import path

from stream_app import broadcast, get_channel
from stream_app.asgi import StreamASGIHandler
from stream_app.backends.memory import MemoryBackend
from stream_app.sessions import Session
from stream_app.signals import session_connected
from stream_app.testing import (
    BroadcastRecorder,
    NotAnEventStream,
    StreamClient,
    StreamTimeout,
    memory_backend,
    read_stream,
)
from tests.urls import urlpatterns as test_urlpatterns

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("stream_backend")]


async def _sync_events(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"data: 1\n\n"]), content_type="text/event-stream")


async def _sync_text(request: HttpRequest) -> StreamingHttpResponse:
    return StreamingHttpResponse(iter([b"a", b"b"]), content_type="text/plain")


async def _failing_events(request: HttpRequest) -> StreamingHttpResponse:
    async def events() -> AsyncIterator[bytes]:
        yield b"data: first\n\n"
        raise RuntimeError("the stream broke")

    return StreamingHttpResponse(events(), content_type="text/event-stream")


async def _slow(request: HttpRequest) -> StreamingHttpResponse:
    await asyncio.sleep(5)
    raise AssertionError("not reached: the client gave up")  # pragma: no cover


urlpatterns = [
    *test_urlpatterns,
    path("sync-events/", _sync_events),
    path("sync-text/", _sync_text),
    path("failing-events/", _failing_events),
    path("slow/", _slow),
]


@pytest.fixture(params=["AsyncClient", "StreamASGIHandler", "ASGIHandler"])
def transport(request: pytest.FixtureRequest) -> Any:
    """Each test reads through Django's test client and through both ASGI handlers."""
    return {
        "AsyncClient": AsyncClient,
        "StreamASGIHandler": StreamASGIHandler,
        "ASGIHandler": ASGIHandler,
    }[request.param]()


@pytest.fixture
def connected() -> Iterator[list[Session]]:
    """The sessions that start streaming during the test."""
    sessions: list[Session] = []

    def on_connected(sender: object, session: Session, **kwargs: Any) -> None:
        sessions.append(session)

    session_connected.connect(on_connected)
    yield sessions
    session_connected.disconnect(on_connected)


async def test_read_stream_reads_events_and_leaving_disconnects_the_session(
    transport: Any, connected: list[Session]
) -> None:
    alpha = get_channel("alpha")
    async with read_stream(transport, "/sse/?channel=alpha") as events:
        assert events.status_code == 200
        assert events.headers["content-type"].startswith("text/event-stream")
        assert events.headers["Cache-Control"] == "no-cache"
        assert dict(events.headers)["X-Accel-Buffering"] == "no"
        assert len(events.headers) == len(list(events.headers))
        ready = await events.next()
        assert (ready.event, json.loads(ready.data or "")) == (
            "ready",
            {"channels": ["alpha", "news"]},
        )
        assert events.retry == 2000
        sent = broadcast("alpha", {"n": 1}, "tick")
        tick = await events.next()
        assert (tick.event, tick.data, tick.id) == ("tick", '{"n":1}', sent)
        assert events.last_event_id == sent
        [session] = connected
        assert session.is_connected
        assert alpha.session_count == 1
    # The session saw the client leave (CancelledError or http.disconnect) and cleaned up.
    assert session.is_closed
    assert session.close_reason == "disconnect"
    assert alpha.session_count == 0


async def test_read_stream_sends_last_event_id_and_headers(transport: Any) -> None:
    first, second, third = (broadcast("alpha", n) for n in range(3))
    async with read_stream(transport, "/sse/?channel=alpha", last_event_id=first) as events:
        replayed = await events.until("ready")
    assert [(e.data, e.id) for e in replayed[:2]] == [("1", second), ("2", third)]
    # Any request header: the same through ``headers``.
    async with read_stream(
        transport, "/sse/?channel=alpha", headers={"Last-Event-ID": second}
    ) as events:
        assert (await events.next()).id == third


async def test_read_stream_iterates_to_the_end_of_a_stream(transport: Any) -> None:
    async with read_stream(transport, "/t/push/?n=3&event=step") as events:
        got = [(e.event, json.loads(e.data or "")) async for e in events]
        assert events.ended
        with pytest.raises(EOFError, match="the stream ended after 3 event"):
            await events.next()
    assert got == [("step", {"i": i}) for i in range(3)]


async def test_read_stream_timeout_names_what_it_waited_for(transport: Any) -> None:
    async with read_stream(transport, "/t/idle/?keep_alive=0.05&retry=none") as events:
        with pytest.raises(StreamTimeout) as caught:
            await events.next(timeout=0.3)
    message = str(caught.value)
    assert "GET /t/idle/?keep_alive=0.05&retry=none: event 1 did not come within 0.3s" in message
    # Keep-alive comments came, and are counted, but are not events.
    assert "no event received yet" in message
    assert "0 bytes" not in message


async def test_read_stream_until_timeout_names_the_event_type(transport: Any) -> None:
    async with read_stream(transport, "/sse/?channel=alpha") as events:
        with pytest.raises(StreamTimeout, match=r"no 'done' event within 0\.2s; 1 event"):
            await events.until("done", timeout=0.2)


async def test_read_stream_refusal_is_read_whole_and_has_no_events(transport: Any) -> None:
    async with read_stream(transport, "/sse/?channel=no-such-channel") as events:
        assert events.status_code == 404
        assert events.headers["Content-Type"] == "application/json"
        assert events.json()["error"] == "unknown_channel"
        with pytest.raises(NotAnEventStream) as caught:
            await events.next()
    message = str(caught.value)
    assert message.startswith("GET /sse/?channel=no-such-channel answered 404 application/json")
    assert "unknown_channel" in message


async def test_read_stream_json_page_is_not_an_event_stream(transport: Any) -> None:
    async with read_stream(transport, "/stream/health/") as events:
        assert events.status_code == 200
        assert events.json()["status"] == "ok"
        with pytest.raises(NotAnEventStream, match="answered 200 application/json, not a 200"):
            async for _ in events:
                pass


@override_settings(ROOT_URLCONF=__name__)
async def test_read_stream_refuses_a_synchronous_event_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A connection left open in this thread (by an earlier test): request_finished's receivers
    # check it, which Django refuses inside the event loop, so the reader closes in a thread.
    with monkeypatch.context() as unsafe:
        unsafe.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "1")
        connection.ensure_connection()
    async with read_stream(AsyncClient(), "/sync-events/") as events:
        assert events.status_code == 200
        with pytest.raises(NotAnEventStream, match="synchronous iterator"):
            await events.next()


@override_settings(ROOT_URLCONF=__name__)
async def test_read_stream_reads_a_synchronous_body_whole() -> None:
    async with read_stream(AsyncClient(), "/sync-text/") as answer:
        assert (answer.status_code, answer.content, answer.text) == (200, b"ab", "ab")


@override_settings(ROOT_URLCONF=__name__)
async def test_read_stream_raises_what_broke_the_stream() -> None:
    async with read_stream(AsyncClient(), "/failing-events/") as events:
        assert (await events.take(1))[0].data == "first"
        with pytest.raises(RuntimeError, match="the stream broke"):
            await events.next()
        assert repr(events) == "<StreamReader GET /failing-events/ 200 received=1>"


@override_settings(ROOT_URLCONF=__name__)
async def test_read_stream_start_timeout_through_the_client() -> None:
    with pytest.raises(StreamTimeout, match=r"GET /slow/: the response \(status and headers\)"):
        async with read_stream(AsyncClient(), "/slow/", start_timeout=0.2):
            pass  # pragma: no cover


async def _broken_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that fails after its first event (or, with ?early=1, before answering)."""
    await receive()
    if scope["query_string"] == b"early=1":
        return
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
    raise RuntimeError("the app broke")


async def test_read_stream_raises_what_broke_an_asgi_app() -> None:
    async with read_stream(_broken_app, "/x") as events:
        assert (await events.next()).data == "first"
        with pytest.raises(RuntimeError, match="the app broke"):
            await events.next()
    with pytest.raises(RuntimeError, match="GET /x\\?early=1: the application returned no resp"):
        async with read_stream(_broken_app, "/x?early=1"):
            pass  # pragma: no cover


async def test_read_stream_refuses_the_sync_client() -> None:
    with pytest.raises(TypeError, match="AsyncClient"):
        async with read_stream(Client(), "/sse/"):
            pass  # pragma: no cover


async def test_read_stream_client_address_needs_an_asgi_app() -> None:
    with pytest.raises(TypeError, match="client_address needs an ASGI application"):
        async with read_stream(AsyncClient(), "/sse/", client_address="10.0.0.1"):
            pass  # pragma: no cover


async def _deaf_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that streams and never listens for http.disconnect."""
    await receive()
    plain = scope["query_string"] == b"plain=1"
    headers = [] if plain else [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"data: x\n\n", "more_body": True})
    await asyncio.sleep(30)


async def _silent_app(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app that never answers."""
    await asyncio.sleep(30)


async def test_read_stream_reports_an_app_that_ignores_the_disconnect() -> None:
    seen = []

    async def read_one() -> None:
        async with read_stream(_deaf_app, "/x", timeout=0.2) as events:
            seen.append((await events.next()).data)

    with pytest.raises(StreamTimeout, match=r"did not finish within 0\.2s of the client's disc"):
        await read_one()
    assert seen == ["x"]


async def test_read_stream_reports_a_body_that_never_ends() -> None:
    # Not an event stream (no Content-Type): its body is read whole on entering the block.
    with pytest.raises(
        StreamTimeout, match=r"GET /x\?plain=1: the end of the response body did not"
    ):
        async with read_stream(_deaf_app, "/x?plain=1", timeout=0.2):
            pass  # pragma: no cover


async def test_read_stream_reports_a_response_that_never_starts() -> None:
    with pytest.raises(StreamTimeout, match=r"GET /x: the response start .* within 0\.2s"):
        async with read_stream(_silent_app, "/x", start_timeout=0.2):
            pass  # pragma: no cover


async def test_read_stream_posts_a_body(transport: Any, broadcasts: BroadcastRecorder) -> None:
    body = json.dumps({"channel": "alpha", "data": {"a": 1}, "event": "note"})
    async with read_stream(
        transport,
        "/stream/publish/",
        method="POST",
        body=body,
        content_type="application/json",
        headers={"Authorization": "Bearer test-token"},
    ) as answer:
        assert answer.status_code == 201, answer.content
    [published] = broadcasts
    assert (published.channel, published.event, published.json()) == ("alpha", "note", {"a": 1})
    assert published.id == answer.json()["id"]


async def test_broadcasts_records_channel_event_data_filter_and_id(
    broadcasts: BroadcastRecorder,
) -> None:
    first = broadcast("alpha", "plain")
    second = await get_channel("beta").abroadcast({"x": [1]}, "up", filter={"role": "admin"})
    assert [(b.channel, b.data, b.event, b.filter, b.id) for b in broadcasts] == [
        ("alpha", "plain", None, None, first),
        ("beta", '{"x":[1]}', "up", {"role": "admin"}, second),
    ]
    assert broadcasts.on("beta", "up")[0].json() == {"x": [1]}
    assert broadcasts.on("beta", "down") == []
    assert broadcasts[-1:] == [broadcasts[1]]
    broadcasts.clear()
    assert len(broadcasts) == 0


async def test_broadcasts_wait_for_publishes_from_another_thread(
    broadcasts: BroadcastRecorder,
) -> None:
    later = asyncio.get_running_loop().run_in_executor(None, broadcast, "alpha", "late")
    [got] = await broadcasts.wait(channel="alpha")
    assert got.data == "late"
    assert got.id == await later
    with pytest.raises(StreamTimeout, match=r"2 broadcast\(s\) on 'alpha' did not come"):
        await broadcasts.wait(2, channel="alpha", timeout=0.05)


async def test_stream_backend_is_a_new_memory_backend_each_time(
    stream_backend: MemoryBackend,
) -> None:
    broadcast("alpha", "kept here")
    assert [m.data for m in (await stream_backend.history(["alpha"], None)).messages] == [
        "kept here"
    ]
    with memory_backend() as fresh:
        assert fresh is not stream_backend
        assert (await fresh.history(["alpha"], None)).messages == []


async def test_stream_client_reads_as_a_logged_in_user(
    stream_client: StreamClient, django_user_model: Any
) -> None:
    user = await django_user_model.objects.acreate(username="reader")
    await stream_client.aforce_login(user)
    async with stream_client.read_stream(f"/sse/?channel=user:{user.pk}") as events:
        ready = await events.next()
        assert json.loads(ready.data or "")["channels"] == [f"user:{user.pk}", "news"]
        broadcast(f"user:{user.pk}", "for you")
        assert (await events.next()).data == "for you"


@pytest.fixture
async def held_stream(stream_client: StreamClient) -> AsyncIterator[Any]:
    """A stream a fixture keeps open for the test (the fixture's loop is the test's)."""
    async with stream_client.read_stream("/sse/?channel=beta") as events:
        yield events


async def test_read_stream_in_an_async_fixture(held_stream: Any) -> None:
    await held_stream.until("ready")
    broadcast("beta", "from the test")
    assert (await held_stream.next()).data == "from the test"


def test_testing_imports_without_httpx_and_names_the_extra_for_event_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import stream_app.testing as testing

    # As if httpx were not installed: the in-process helpers do not need it.
    monkeypatch.setitem(sys.modules, "httpx", None)
    monkeypatch.delitem(sys.modules, "stream_app.testing.sockets", raising=False)
    monkeypatch.delattr(testing, "sockets", raising=False)
    assert testing.read_stream is read_stream
    with pytest.raises(
        ImportError, match=r"EventStream needs httpx, .*install django-stream-llm\[testing\]"
    ):
        testing.EventStream  # noqa: B018
