"""The memory backend in this process: ids, history retention (TTL), what it refuses to record."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import AsyncClient, AsyncRequestFactory, override_settings

from stream_app import protocol
from stream_app.backends import get_backend, reset_backend
from stream_app.backends.memory import PRUNE_BATCH, MemoryBackend
from stream_app.channels import get_channel, subscribe
from stream_app.sessions import Session

factory = AsyncRequestFactory()


@pytest.fixture(autouse=True)
def fresh_backend() -> Iterator[None]:
    reset_backend()
    yield
    reset_backend()


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
    assert bad.json()["error"] == "invalid_data"
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


@override_settings(STREAM_APP={"HISTORY_TTL": 0.2})
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
    await asyncio.sleep(0.3)
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
