"""Logging out ends the streams opened with that Django session, on every worker.

Real servers over sockets: a user's streams carry the session cookie, the logout is Django's
own ``LogoutView`` reached by a real POST, and events are published through the publish
endpoint. The in-process tests drive the signal and the memory backend directly.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from asgiref.sync import sync_to_async
from django.conf import settings
from django.contrib.auth.models import AnonymousUser, User
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.backends.db import SessionStore
from django.test import AsyncRequestFactory, override_settings

from stream_app import logout, protocol
from stream_app.backends import reset_backend
from stream_app.channels import broadcast, get_channel
from stream_app.permissions import check_subscribe
from stream_app.protocol import Event
from stream_app.sessions import Session
from stream_app.testing import EventStream
from tests.conftest import Server
from tests.test_notifications import session_cookie

pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = {"Authorization": "Bearer test-token"}
CSRF = "k" * 32


def login(username: str) -> tuple[User, str, str]:
    """A user and two session cookies of theirs: this browser and another device."""
    user = User.objects.create_user(username, password="pw")
    return user, str(session_cookie(user)), str(session_cookie(user))


async def open_stream(
    server: Server, cookie: str | None, channels: list[str], last_event_id: str | None = None
) -> tuple[EventStream, list[Event]]:
    """An open stream and what came before its ``ready`` event (a replay)."""
    headers = {"Cookie": f"{settings.SESSION_COOKIE_NAME}={cookie}"} if cookie else {}
    if last_event_id:
        headers["Last-Event-ID"] = last_event_id
    query = "&".join(f"channel={quote(name)}" for name in channels)
    stream = await EventStream(f"{server.url}/sse/?{query}", headers=headers).open()
    if stream.status_code != 200:
        return stream, []
    before: list[Event] = []
    while (event := await stream.next_event(10)).event != "ready":
        before.append(event)
    return stream, before


async def publish(server: Server, channel: str, data: str, event: str | None = None) -> Any:
    body: dict[str, Any] = {"channel": channel, "data": data}
    if event is not None:
        body["event"] = event
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{server.url}/stream/publish/", json=body, headers=TOKEN)


async def log_out(server: Server, cookie: str) -> None:
    """POST to Django's LogoutView with the session cookie and a CSRF token."""
    cookies = {settings.SESSION_COOKIE_NAME: cookie, settings.CSRF_COOKIE_NAME: CSRF}
    async with httpx.AsyncClient(timeout=10, cookies=cookies) as client:
        response = await client.post(f"{server.url}/t/logout/", headers={"X-CSRFToken": CSRF})
    assert response.status_code == 302, response.text


async def ends(stream: EventStream) -> list[Event]:
    """What the stream sends until it ends; TimeoutError if it is still open after 3 s."""
    try:
        return await stream.read_all(timeout=3)
    finally:
        await stream.close()


async def test_logout_ends_the_streams_of_that_session_only(server: Server) -> None:
    bob, cookie, laptop_cookie = await sync_to_async(login)("bob")
    private = f"user:{bob.pk}"
    mine, _ = await open_stream(server, cookie, [private, "news"])
    laptop, _ = await open_stream(server, laptop_cookie, [private])
    try:
        before = (await publish(server, private, "before")).json()["id"]
        assert (await mine.next_event(5)).data == "before"
        assert (await laptop.next_event(5)).data == "before"

        await log_out(server, cookie)
        assert await ends(mine) == []
        # The other device's session is still logged in: its stream goes on.
        assert (await publish(server, private, "after")).status_code == 201
        after = await laptop.next_event(5)
        assert after.data == "after"
    finally:
        await laptop.close()
    # EventSource reconnects with the old cookie: anonymous now, refused the private channel.
    again, _ = await open_stream(server, cookie, [private])
    await again.close()
    assert again.status_code == 403
    # The control message is never replayed: the other device resumes with just "after".
    resumed, replayed = await open_stream(server, laptop_cookie, [private], before)
    await resumed.close()
    assert [(e.event, e.data, e.id) for e in replayed] == [(None, "after", after.id)]


async def test_logout_on_one_worker_ends_the_streams_on_every_worker(
    server_factory: Any, redis_env: dict[str, str]
) -> None:
    a = server_factory("uvicorn", redis_env)
    b = server_factory("uvicorn", redis_env)
    bob, cookie, laptop_cookie = await sync_to_async(login)("bob")
    private = f"user:{bob.pk}"
    on_a, _ = await open_stream(a, cookie, [private])
    on_b, _ = await open_stream(b, cookie, ["news", private])
    laptop, _ = await open_stream(b, laptop_cookie, [private])
    try:
        await log_out(a, cookie)
        assert await ends(on_a) == []
        assert await ends(on_b) == []
        assert (await publish(a, private, "after")).status_code == 201
        assert (await laptop.next_event(5)).data == "after"
    finally:
        await laptop.close()


@pytest.mark.parametrize("event", [logout.EVENT, "stream_app.anything"])
async def test_reserved_event_types_cannot_be_published(uvicorn_server: Server, event: str) -> None:
    response = await publish(uvicorn_server, "news", "x", event)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_event"
    assert "reserved" in response.json()["message"]
    with pytest.raises(ValueError, match="reserved"):
        broadcast("news", "x", event)


def allow_everything(user: Any, channel: str) -> bool:
    """A CAN_SUBSCRIBE hook that allows every channel."""
    return True


@override_settings(STREAM_APP={"CAN_SUBSCRIBE": f"{__name__}.allow_everything"})
async def test_the_internal_channel_cannot_be_subscribed_even_by_a_permissive_hook() -> None:
    assert await check_subscribe(AnonymousUser(), logout.CHANNEL) is None
    assert await check_subscribe(AnonymousUser(), "news") is True


# -- in process, memory backend ------------------------------------------------------------------

factory = AsyncRequestFactory()


@pytest.fixture
def memory() -> Iterator[None]:
    reset_backend()
    yield
    reset_backend()


async def tracked(user: Any, session_key: str) -> tuple[Any, Session]:
    request = factory.get("/sse/")
    request.session = SessionStore(session_key)
    session = Session(request, retry=None, keep_alive=None, state={"user_id": user.pk})
    get_channel(f"user:{user.pk}").register(session)
    await logout.end_on_logout(request, user, session)
    return request, session


async def test_logout_signal_ends_matching_sessions_in_process(memory: None) -> None:
    bob = await User.objects.acreate(username="bob")
    request, mine = await tracked(bob, "a" * 32)
    _, other = await tracked(bob, "b" * 32)
    channel = get_channel(f"user:{bob.pk}")

    await sync_to_async(user_logged_out.send)(sender=User, request=request, user=bob)
    await channel.abroadcast("after")

    assert mine.close_reason == "logout"
    assert channel.active_sessions == [other]
    assert other.close_reason is None
    assert [e.data for e in protocol.decode(b"".join(other._queue))] == ["after"]
    assert protocol.decode(b"".join(mine._queue)) == []


async def test_anonymous_streams_are_not_tracked(memory: None) -> None:
    request = factory.get("/sse/")
    request.session = SessionStore("c" * 32)
    session = Session(request, retry=None, keep_alive=None, state={})
    await logout.end_on_logout(request, AnonymousUser(), session)
    await sync_to_async(user_logged_out.send)(sender=User, request=request, user=None)
    assert session.close_reason is None


async def test_logout_where_no_stream_is_served_logs_no_error(
    memory: None, caplog: pytest.LogCaptureFixture
) -> None:
    # A process that serves no streams (a WSGI site beside the ASGI workers, a test client)
    # on a process-local backend has no stream to end: logging out is quiet there.
    from stream_app.backends.memory import mark_serving

    bob = await User.objects.acreate(username="quiet-bob")
    request = factory.get("/logout/")
    request.session = SessionStore("d" * 32)
    mark_serving(False)
    try:
        await sync_to_async(user_logged_out.send)(sender=User, request=request, user=bob)
    finally:
        mark_serving()
    assert [r for r in caplog.records if r.levelname == "ERROR"] == []
