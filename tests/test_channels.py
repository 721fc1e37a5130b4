"""Channels in one process (memory backend): registration, filters, ids, replay, bad input."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest
from django.test import AsyncRequestFactory, override_settings

from stream_app import protocol
from stream_app.backends import get_backend
from stream_app.backends.base import Message
from stream_app.channels import (
    Channel,
    ChannelNameError,
    MessageTooLarge,
    create_channel,
    get_channel,
    subscribe,
)
from stream_app.filters import MAX_NODES, FilterError
from stream_app.sessions import Session, stats

factory = AsyncRequestFactory()


# A new in-memory backend per test (the stream_app pytest plugin's fixture).
pytestmark = pytest.mark.usefixtures("stream_backend")


def make_session(state: dict[str, Any] | None = None, **headers: str) -> Session:
    request = factory.get("/sse/", headers=headers)
    return Session(request, retry=None, keep_alive=None, state=state or {})


def received(session: Session) -> list[protocol.Event]:
    return protocol.decode(b"".join(session._queue))


async def test_channel_register_and_deregister_are_idempotent() -> None:
    channel = get_channel("reg-test")
    session = make_session()
    channel.register(session)
    channel.register(session)
    assert channel.session_count == 1
    assert channel.active_sessions == [session]
    channel.deregister(session)
    channel.deregister(session)
    assert channel.session_count == 0


async def test_channel_broadcast_filters_by_state_and_shares_one_id() -> None:
    channel = get_channel("filter-test")
    staff = make_session({"is_staff": True, "user_id": 1})
    user = make_session({"is_staff": False, "user_id": 2})
    other = make_session({"is_staff": False, "user_id": 3})
    for session in (staff, user, other):
        channel.register(session)
    first = await channel.abroadcast({"a": 1}, "note", filter={"is_staff": True})
    second = channel.broadcast("hi", filter={"user_id__in": [1, 2]})
    assert [(e.event, e.data, e.id) for e in received(staff)] == [
        ("note", '{"a":1}', first),
        (None, "hi", second),
    ]
    assert [e.id for e in received(user)] == [second]
    assert received(other) == []
    # One encoding per broadcast: recipients share the same bytes object.
    assert staff._queue[1] is user._queue[0]


async def test_channel_ids_grow_across_channels() -> None:
    a, b = get_channel("ids-a"), get_channel("ids-b")
    ids = [await a.abroadcast(1), await b.abroadcast(2), a.broadcast(3)]
    keys = [tuple(int(p) for p in i.split("-")) for i in ids]
    assert keys == sorted(keys)
    assert len(set(ids)) == 3


async def test_channel_callable_filter_on_local_and_memory_channels() -> None:
    local = create_channel()
    named = get_channel("callable-test")
    session = make_session({"n": 5})
    local.register(session)
    named.register(session)
    local.broadcast("local", filter=lambda state: state["n"] > 1)
    named.broadcast("named", filter=lambda state: state["n"] > 10)
    assert [e.data for e in received(session)] == ["local"]


@override_settings(STREAM_APP={"BACKEND": "stream_app.backends.redis.RedisBackend"})
def test_channel_callable_filter_refused_across_processes() -> None:
    with pytest.raises(FilterError, match="cannot cross processes"):
        get_channel("remote").broadcast("x", filter=lambda state: True)


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"filter": {"user_id__in": 3}}, FilterError),
        ({"filter": []}, FilterError),
        ({"event": "two\nlines"}, protocol.ProtocolError),
    ],
)
async def test_channel_bad_broadcast_raises_before_publishing(
    kwargs: dict[str, Any], error: type[Exception]
) -> None:
    channel = get_channel("bad-input")
    session = make_session()
    channel.register(session)
    before = await get_backend().history(["bad-input"], f"{get_backend().boot}-0")
    with pytest.raises(error):
        await channel.abroadcast("x", **kwargs)
    after = await get_backend().history(["bad-input"], f"{get_backend().boot}-0")
    assert len(after.messages) == len(before.messages)
    assert received(session) == []


@override_settings(STREAM_APP={"MAX_MESSAGE_BYTES": 100})
async def test_channel_oversized_payload_is_refused() -> None:
    with pytest.raises(MessageTooLarge, match="MAX_MESSAGE_BYTES"):
        await get_channel("big").abroadcast("é" * 60)
    await get_channel("big").abroadcast("é" * 40)


@pytest.mark.parametrize("name", ["", "a b", "x" * 101, "new\nline", "slash/", None])
def test_channel_invalid_names_are_refused(name: Any) -> None:
    with pytest.raises(ChannelNameError):
        get_channel(name)


async def test_channel_closed_session_deregisters_itself() -> None:
    channel = get_channel("closing")
    session, live = make_session(), make_session()
    channel.register(session)
    channel.register(live)
    session._abort("disconnect")
    assert channel.active_sessions == [live]
    event_id = channel.broadcast("x")
    # The broadcast went out, to the live session only.
    assert [(e.data, e.id) for e in received(live)] == [("x", event_id)]
    assert "x" not in [e.data for e in received(session)]


async def test_channel_slow_consumer_is_closed_and_counted() -> None:
    channel = get_channel("slow")
    slow = make_session()
    slow.max_queue = 3
    fast = make_session()
    channel.register(slow)
    channel.register(fast)
    before = stats.slow_consumers
    for i in range(4):
        channel.broadcast(i)
    assert slow.is_closed
    assert slow.close_reason == "slow_consumer"
    assert stats.slow_consumers == before + 1
    assert channel.active_sessions == [fast]
    assert [e.data for e in received(fast)] == ["0", "1", "2", "3"]


async def test_channel_broadcast_from_another_thread_is_delivered_in_the_loop() -> None:
    channel = get_channel("threads")
    session = make_session()
    channel.register(session)
    ids: list[str] = []
    thread = threading.Thread(target=lambda: ids.append(channel.broadcast("from thread")))
    thread.start()
    await asyncio.to_thread(thread.join)
    await asyncio.sleep(0.01)
    assert [(e.data, e.id) for e in received(session)] == [("from thread", ids[0])]


async def test_channel_count_matches_filters() -> None:
    channel = get_channel("count")
    for uid in (1, 2, 3):
        channel.register(make_session({"user_id": uid}))
    assert await channel.acount() == 3
    assert await channel.acount({"user_id__in": [1, 3]}) == 2
    with pytest.raises(FilterError):
        await channel.acount({"user_id__in": 1})


async def test_subscribe_replays_missed_events_in_order_across_channels() -> None:
    a, b = get_channel("replay-a"), get_channel("replay-b")
    mark = await a.abroadcast("before")
    sent = [await a.abroadcast("a1"), await b.abroadcast("b1"), await a.abroadcast("a2")]
    session = make_session(**{"Last-Event-ID": mark})
    await subscribe(session, [a, b])
    live = await b.abroadcast("live")
    assert [(e.data, e.id) for e in received(session)] == [
        ("a1", sent[0]),
        ("b1", sent[1]),
        ("a2", sent[2]),
        ("live", live),
    ]


async def test_subscribe_holds_live_events_during_replay_without_duplicates() -> None:
    channel = get_channel("replay-race")
    mark = await channel.abroadcast("m")
    missed = await channel.abroadcast("missed")
    session = make_session(**{"Last-Event-ID": mark})
    backend = get_backend()
    real_history = backend.history

    async def slow_history(channels: Any, after: str, limit: int | None = None) -> Any:
        # A live event arrives while history is being read.
        live_id.append(await channel.abroadcast("during"))
        return await real_history(channels, after, limit)

    live_id: list[str] = []
    backend.history = slow_history  # type: ignore[method-assign]
    await subscribe(session, [channel])
    assert [(e.data, e.id) for e in received(session)] == [
        ("missed", missed),
        ("during", live_id[0]),
    ]


@pytest.mark.parametrize(
    ("last_id", "reason"),
    [("not-an-id", "invalid_id"), ("1-1", "history_expired")],
)
async def test_subscribe_resets_when_history_cannot_cover(last_id: str, reason: str) -> None:
    channel = get_channel("reset")
    session = make_session(**{"Last-Event-ID": last_id})
    await subscribe(session, [channel])
    live = channel.broadcast("live")
    events = received(session)
    assert events[0].event == "reset"
    assert reason in (events[0].data or "")
    assert [(e.data, e.id) for e in events[1:]] == [("live", live)]


@override_settings(STREAM_APP={"HISTORY_SIZE": 3})
async def test_subscribe_resets_when_ring_dropped_the_id() -> None:
    channel = get_channel("ring")
    mark = await channel.abroadcast(0)
    for i in range(1, 6):
        await channel.abroadcast(i)
    session = make_session(**{"Last-Event-ID": mark})
    await subscribe(session, [channel])
    events = received(session)
    assert events[0].event == "reset"
    assert [e.data for e in events[1:]] == ["3", "4", "5"]


# Matches a session on plan "pro", but is over MAX_NODES: refused wherever it is compiled.
OVERSIZED = {"any": [{"plan": "pro"}, *({"plan": f"p{i}"} for i in range(MAX_NODES))]}


async def test_channel_filter_over_the_limits_is_refused_by_the_publisher() -> None:
    channel = get_channel("limits-publisher")
    session = make_session({"plan": "pro"})
    channel.register(session)
    with pytest.raises(FilterError, match="conditions"):
        channel.broadcast("refused", filter=OVERSIZED)
    assert received(session) == []


async def test_channel_drops_an_event_from_elsewhere_whose_filter_is_over_the_limits(
    caplog: pytest.LogCaptureFixture,
) -> None:
    channel = get_channel("limits-foreign")
    session = make_session({"plan": "pro"})
    channel.register(session)
    # Another process (older code, or a script writing to the backend) publishes it anyway.
    backend = get_backend()
    await backend.publish(Message(channel.name, "oversized", None, OVERSIZED))
    await backend.publish(Message(channel.name, "malformed", None, {"plan__nee": "pro"}))
    channel.broadcast("fine", filter={"plan": "pro"})
    assert [e.data for e in received(session)] == ["fine"]
    assert caplog.text.count("dropped an event") == 2
    # And a client that replays the history gets the same.
    late = make_session({"plan": "pro"}, **{"Last-Event-ID": f"{backend.boot}-0"})
    await subscribe(late, [channel])
    assert [e.data for e in received(late)] == ["fine"]


async def test_channel_built_directly_is_the_named_channel_and_filters_replay() -> None:
    name = "direct-channel"
    backend = get_backend()
    mark = f"{backend.boot}-0"
    # Published before anything in this process used the name (by another process, say).
    await backend.publish(Message(name, "staff only", None, {"is_staff": True}))
    await backend.publish(Message(name, "everyone"))
    direct = Channel(name)
    session = make_session({"is_staff": False}, **{"Last-Event-ID": mark})
    await subscribe(session, [direct])
    assert [e.data for e in received(session)] == ["everyone"]
    # Live delivery reaches it, with the same filters.
    assert Channel(name) is direct
    assert get_channel(name) is direct
    get_channel(name).broadcast("staff live", filter={"is_staff": True})
    get_channel(name).broadcast("everyone live")
    assert [e.data for e in received(session)] == ["everyone", "everyone live"]
    # A local channel is still a new one each time.
    assert create_channel() is not create_channel()
