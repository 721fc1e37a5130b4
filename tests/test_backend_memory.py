"""The memory backend in this process: ids, history retention (TTL), what it refuses to record."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import AsyncClient, AsyncRequestFactory, Client, override_settings

from stream_app import protocol
from stream_app.asgi import StreamASGIHandler
from stream_app.backends import get_backend, memory
from stream_app.backends.base import BackendUnavailable, NotServingStreams
from stream_app.backends.memory import PRUNE_BATCH, MemoryBackend
from stream_app.channels import get_channel, subscribe
from stream_app.sessions import Session

factory = AsyncRequestFactory()


# A new in-memory backend per test (the stream_app pytest plugin's fixture).
pytestmark = pytest.mark.usefixtures("stream_backend")


def make_session(**headers: str) -> Session:
    request = factory.get("/sse/", headers=headers)
    return Session(request, retry=None, keep_alive=None, state={})


def received(session: Session) -> list[protocol.Event]:
    return protocol.decode(b"".join(session._queue))


@pytest.mark.parametrize(
    "last_id",
    [
        "99999999999999999999999-0",
        "1-99999999999999999999999",
        "18446744073709551616-0",
        "\u00b2-1",
    ],
)
async def test_memory_out_of_range_or_non_ascii_id_is_invalid_id_without_traceback(
    last_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = get_channel("range")
    await channel.abroadcast("before")
    session = make_session(**{"Last-Event-ID": last_id})
    with caplog.at_level(logging.DEBUG, logger="stream_app"):
        await subscribe(session, [channel])
    live = await channel.abroadcast("live")
    events = received(session)
    assert events[0].event == "reset"
    assert json.loads(events[0].data or "")["reason"] == "invalid_id"
    assert [(e.data, e.id) for e in events[1:]] == [("live", live)]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_memory_valid_id_takes_ascii_digits_up_to_64_bits() -> None:
    backend = get_backend()
    assert backend.valid_id(f"{2**64 - 1}-{2**64 - 1}")
    for bad in (f"{2**64}-0", "\u0661-1", "1-\u00b2", "1", "-1", "1-", "a-1"):
        assert not backend.valid_id(bad), bad


async def test_memory_unencodable_publish_is_refused_and_never_recorded() -> None:
    channel = get_channel("surrogate")
    watcher = make_session()
    channel.register(watcher)
    client = AsyncClient()

    async def post(data: str) -> Any:
        body = json.dumps({"channel": "surrogate", "data": data})
        return await client.post(
            "/stream/publish/",
            body,
            "application/json",
            headers={"Authorization": "Bearer test-token"},
        )

    first = await post("first")
    assert first.status_code == 201, first.content
    bad = await post("\ud800")
    assert bad.status_code == 400
    # The body parser refuses it before the backend sees it; the backend refuses it too (below).
    assert bad.json()["error"] == "invalid_json"
    assert "surrogate" in bad.json()["message"]
    second = await post("second")
    assert second.status_code == 201
    session = make_session(**{"Last-Event-ID": first.json()["id"]})
    await subscribe(session, [channel])
    assert [(e.event, e.data, e.id) for e in received(session)] == [
        (None, "second", second.json()["id"])
    ]
    with pytest.raises(UnicodeEncodeError):
        channel.broadcast({"text": "\udfff"})


# 1,200 publishes must finish within the TTL before the sleep: 2 s, not 0.2 (they took over
# 0.2 s on a loaded machine, and the rings began to expire during the loop).
@override_settings(STREAM_APP={"HISTORY_TTL": 2.0})
async def test_memory_drops_idle_unsubscribed_channels_after_history_ttl() -> None:
    backend = get_backend()
    assert isinstance(backend, MemoryBackend)
    listened = get_channel("listened")
    listened.register(make_session())
    kept = await listened.abroadcast("kept")
    # 200 finished chats: six events each, nobody listening any more.
    for chat in range(200):
        for n in range(6):
            await get_channel(f"generation:{chat}").abroadcast(n)
    assert len(backend._rings) == 201
    await asyncio.sleep(2.1)
    await get_channel("fresh").abroadcast("first")
    # The work of one publish is bounded: what is left goes with the next publishes.
    assert len(backend._rings) >= 202 - PRUNE_BATCH
    for _ in range(200 // PRUNE_BATCH + 1):
        await get_channel("fresh").abroadcast("again")
    assert set(backend._rings) == {"listened", "fresh"}
    history = await backend.history(["listened"], f"{backend.boot}-0")
    assert [m.id for m in history.messages] == [kept]


@override_settings(STREAM_APP={"HISTORY_TTL": 0.2})
async def test_memory_history_of_an_expired_channel_is_gone() -> None:
    backend = get_backend()
    channel = get_channel("expiring")
    await channel.abroadcast("old")
    await asyncio.sleep(0.3)
    history = await backend.history(["expiring"], f"{backend.boot}-0")
    assert history.messages == []
    assert "expiring" not in backend._rings


@pytest.fixture
def not_serving() -> Iterator[None]:
    """This test process as a shell or a worker would be: serving no streams."""
    memory.mark_serving(False)
    yield
    memory.mark_serving(True)


async def test_memory_publish_in_a_process_serving_no_streams_fails_loudly(
    not_serving: None,
) -> None:
    channel = get_channel("nobody")
    with pytest.raises(NotServingStreams) as raised:
        channel.broadcast("lost")
    with pytest.raises(NotServingStreams):
        await channel.abroadcast("lost")
    message = str(raised.value)
    assert 'STREAM_APP["BACKEND"]' in message
    assert "stream_app.backends.redis.RedisBackend" in message
    assert "stream_app.backends.channels.ChannelsBackend" in message
    assert isinstance(raised.value, BackendUnavailable)
    assert (await get_backend().history(["nobody"], "0-0")).messages == []


@pytest.mark.django_db
async def test_memory_serving_is_marked_by_an_asgi_request_not_a_wsgi_one(
    not_serving: None,
) -> None:
    await asyncio.to_thread(Client().get, "/admin/login/")
    assert not memory.is_serving()
    await AsyncClient().get("/admin/login/")
    assert memory.is_serving()
    assert get_channel("served").broadcast("kept")


@pytest.mark.parametrize(
    "serve",
    [
        lambda: StreamASGIHandler(),
        lambda: get_channel("subscribed").register(make_session()),
    ],
    ids=["asgi-handler", "subscription"],
)
async def test_memory_serving_is_marked_by_the_handler_or_a_subscription(
    not_serving: None, serve: Any
) -> None:
    serve()
    assert memory.is_serving()
    assert await get_channel("served").abroadcast("kept")


@override_settings(STREAM_APP={"HISTORY_TTL": 0})
async def test_memory_history_ttl_zero_keeps_nothing_and_still_publishes() -> None:
    session = make_session()
    channel = get_channel("zero")
    channel.register(session)
    channel.deregister(session)
    assert await channel.abroadcast("a")
    assert await get_channel("zero-b").abroadcast("b")
    backend = get_backend()
    assert isinstance(backend, MemoryBackend)
    assert backend._rings == {}
