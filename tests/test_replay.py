"""Replay over real servers: a client any number of events behind resumes, with bounded memory.

A uvicorn worker on the memory backend and on a real Redis; ``MAX_QUEUE`` is small so that the
history is many times what one session may queue.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from asgiref.sync import async_to_sync
from django.test import AsyncRequestFactory, override_settings

from stream_app import protocol
from stream_app.backends import get_backend, reset_backend
from stream_app.backends.base import Message
from stream_app.backends.redis import RedisBackend
from stream_app.channels import create_channel, deliver, get_channel, subscribe
from stream_app.protocol import Event
from stream_app.replay import coverage
from stream_app.sessions import Session
from stream_app.testing import EventStream
from tests.conftest import RedisServer, Server

TOKEN = {"Authorization": "Bearer test-token"}
MAX_QUEUE = 50
HISTORY = 500


@override_settings(STREAM_APP={"MAX_QUEUE": 10})
@pytest.mark.usefixtures("stream_backend")
async def test_replay_pages_within_the_queue_and_hands_over_past_a_full_hold() -> None:
    """In one process: history is read a few events at a time as the writer drains, and live
    events that overflow the hold meanwhile are read from history again, none lost or doubled.
    """
    channel = get_channel("paged")
    sent = [await channel.abroadcast(i) for i in range(95)]
    backend = get_backend()
    pages: list[int] = []
    real_history = backend.history

    async def recording(*args: Any) -> Any:
        history = await real_history(*args)
        pages.append(len(history.messages))
        return history

    backend.history = recording  # type: ignore[method-assign]
    request = AsyncRequestFactory().get("/sse/", headers={"Last-Event-ID": sent[0]})
    session = Session(request, retry=None, keep_alive=None)
    await subscribe(session, [channel])
    assert session.queued <= 10
    events: list[Event] = []
    live = 95
    async for chunk in session.response:
        assert session.queued <= 10
        events.extend(protocol.decode(chunk))
        # Live events while the replay pages: three per write overflow the hold (10).
        for _ in range(3):
            if live < 130:
                channel.broadcast(live)
                live += 1
        if events and events[-1].data == "129":
            session.close()
    assert [int(e.data or "") for e in events] == list(range(1, 130))
    assert [e.id for e in events[:94]] == sent[1:]
    assert max(pages) <= 5


@override_settings(STREAM_APP={"HISTORY_SIZE": 3})
@pytest.mark.usefixtures("stream_backend")
async def test_replay_coverage_tells_what_history_gave() -> None:
    """What later steps (the notifications backlog) learn instead of reading history again."""
    kept, trimmed = get_channel("cover-kept"), get_channel("cover-trimmed")
    mark = await kept.abroadcast("before")
    lost = [await trimmed.abroadcast(i) for i in range(3)]
    retained = [await trimmed.abroadcast(i) for i in range(3, 6)]
    replayed = await kept.abroadcast("after")
    request = AsyncRequestFactory().get("/sse/", headers={"Last-Event-ID": mark})
    session = Session(request, retry=None, keep_alive=None)
    assert coverage(session) is None
    await subscribe(session, [kept, trimmed])
    covered = coverage(session)
    assert covered is not None
    # Older than the client's id: it has them; replayed: it has them now.
    assert covered.covers("cover-kept", mark)
    assert covered.covers("cover-kept", replayed)
    assert all(covered.covers("cover-trimmed", i) for i in retained)
    # Pushed out of the ring: nobody sent them (the backlog may).
    assert not any(covered.covers("cover-trimmed", i) for i in lost)
    assert not covered.covers("cover-other", replayed)
    assert not covered.covers("cover-kept", "not-an-id")


@pytest.fixture(params=["memory", "redis"])
def in_process_backend(request: pytest.FixtureRequest) -> Iterator[str]:
    """The memory backend, or the Redis backend on the session's private Redis, in this
    process; its name."""
    options: dict[str, Any] = {}
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        if redis_server.proc is None:
            redis_server.start()
        options = {
            "BACKEND": "stream_app.backends.redis.RedisBackend",
            "REDIS_URL": redis_server.url,
            "KEY_PREFIX": f"replay{time.monotonic_ns()}",
        }
    with override_settings(STREAM_APP=options):
        reset_backend()
        yield request.param
        backend = get_backend()
        if isinstance(backend, RedisBackend):
            async_to_sync(backend.aclose)()
    reset_backend()


async def read_events(session: Session, count: int) -> list[Event]:
    """The first ``count`` events the session's writer sends (then the session ends)."""
    events: list[Event] = []
    async with asyncio.timeout(10):
        async for chunk in session.response:
            events.extend(protocol.decode(chunk))
            if len(events) >= count:
                session.close()
    return events


@pytest.mark.parametrize("late", [False, True], ids=["in-a-row", "after-the-first-replay"])
async def test_replay_resets_once_per_session_registered_on_several_channels(
    in_process_backend: str, late: bool
) -> None:
    """A position history cannot cover (older than the retained history) is one ``reset``
    for the session, not one per channel ``Channel.register`` replays."""
    first, second = get_channel("once-a"), get_channel("once-b")
    kept = [await first.abroadcast("a"), await second.abroadcast("b")]
    request = AsyncRequestFactory().get("/sse/", headers={"Last-Event-ID": "1-1"})
    session = Session(request, retry=None, keep_alive=None)
    first.register(session)
    if late:
        # The first channel's replay has queued its reset and history: the second's is
        # another replay.
        for _ in range(500):
            if session.queued == 2:
                break
            await asyncio.sleep(0.02)
        assert session.queued == 2
    second.register(session)
    # Whatever arrives after the two histories and one reset: one more event than expected.
    live = await first.abroadcast("live")
    events = await read_events(session, 4)
    resets = [e for e in events if e.event == "reset"]
    assert [json.loads(e.data or "") for e in resets] == [
        {"reason": "history_expired", "last_event_id": "1-1"}
    ]
    # Registered in a row, the channels replay as one history, then live: no duplicate.
    assert [e.id for e in events if e.event != "reset"] == [*kept, live]


def resuming(after: str, **kw: Any) -> Session:
    """A session of a client that resumes after ``after``."""
    request = AsyncRequestFactory().get("/sse/", headers={"Last-Event-ID": after})
    return Session(request, retry=None, keep_alive=None, **kw)


async def test_replay_skips_a_live_event_that_history_already_gave() -> None:
    """On Redis the listener can deliver an event in flight while history was read, after the
    hand-over: it is skipped, and the first newer one goes through."""
    reset_backend()
    try:
        channel = get_channel("in-flight")
        mark = await channel.abroadcast("mark")
        replayed = await channel.abroadcast("replayed")
        session = resuming(mark)
        await subscribe(session, [channel])
        # What the listener would deliver late: the same event, same id (and ids arrive in
        # order: the first newer one ends the check).
        deliver(Message("in-flight", "replayed", id=replayed))
        live = await channel.abroadcast("live")
        events = await read_events(session, 2)
        assert [(e.data, e.id) for e in events] == [("replayed", replayed), ("live", live)]
    finally:
        reset_backend()


async def test_replay_failing_then_step_ends_the_stream(caplog: pytest.LogCaptureFixture) -> None:
    """A ``then`` step (connect hooks) that fails after history was queued is logged and
    closes the session: the client reconnects rather than miss what the step would send."""
    reset_backend()
    try:
        channel = get_channel("then-fails")
        mark = await channel.abroadcast("mark")
        await channel.abroadcast("replayed")

        async def failing() -> None:
            raise RuntimeError("hook broke")

        session = resuming(mark)
        await subscribe(session, [channel], then=failing)
        events: list[Event] = []
        async with asyncio.timeout(5):
            # The stream ends after what was queued (without the live hand-over).
            async for chunk in session.response:
                events.extend(protocol.decode(chunk))
        assert [e.data for e in events] == ["replayed"]
        assert session.is_closed
        assert "a step after replay failed" in caplog.text
        assert "hook broke" in caplog.text
    finally:
        reset_backend()


async def test_replay_without_history_resets_and_goes_on_live(
    private_redis: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down while a client resumes: one ``history_unavailable`` reset, then live events
    once Redis is back (the listener subscribes when it reconnects)."""
    options = {
        "BACKEND": "stream_app.backends.redis.RedisBackend",
        "REDIS_URL": private_redis.url,
        "KEY_PREFIX": f"down{time.monotonic_ns()}",
    }
    with override_settings(STREAM_APP=options):
        reset_backend()
        try:
            channel = get_channel("down")
            mark = await channel.abroadcast("mark")
            private_redis.stop()
            session = resuming(mark)
            await subscribe(session, [channel])
            private_redis.start()
            backend = get_backend()
            assert await backend.ready("down", 10)
            live = await channel.abroadcast("live")
            events = await read_events(session, 2)
            assert [e.event for e in events] == ["reset", None]
            assert json.loads(events[0].data or "")["reason"] == "history_unavailable"
            assert (events[1].data, events[1].id) == ("live", live)
            assert "replay failed; the session continues live" in caplog.text
            await backend.aclose()
        finally:
            reset_backend()


async def test_replay_hold_full_of_process_local_events_ends_a_slow_consumer() -> None:
    """Live events held while history is read are dropped past ``max_queue`` only when
    history has them: a hold full of events of a process-local channel (no history) ends
    the session as a slow consumer would, instead of losing them or growing without bound."""
    reset_backend()
    try:
        named, local = get_channel("hold-named"), create_channel()
        mark = await named.abroadcast("mark")
        for i in range(10):
            await named.abroadcast(i)
        session = resuming(mark, max_queue=4)
        # Returns once the replay waits for the client to drain its full queue.
        await subscribe(session, [named, local])
        assert session.queued == 4
        for i in range(4):
            local.broadcast(f"local {i}")
        assert not session.is_closed
        local.broadcast("one too many")
        assert session.is_closed
        assert session.close_reason == "slow_consumer"
    finally:
        reset_backend()


def status_kb(pid: int, field: str) -> int:
    """A ``/proc/<pid>/status`` memory field (``VmRSS``, ``VmHWM``), in KiB."""
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


@pytest.fixture(params=["memory", "redis"])
def backend_env(request: pytest.FixtureRequest) -> dict[str, str]:
    settings = {"MAX_QUEUE": MAX_QUEUE, "HISTORY_SIZE": 2000}
    env = {"STREAM_APP_JSON": json.dumps(settings), "STREAM_KEEP_ALIVE": "0.5"}
    if request.param == "redis":
        env.update(request.getfixturevalue("redis_env"))
    return env


async def publish_many(server: Server, channel: str, items: list[Any]) -> list[str]:
    """Publish ``items`` in order through the publish endpoint; their ids."""
    ids = []
    async with httpx.AsyncClient(timeout=10) as client:
        for data in items:
            reply = await client.post(
                f"{server.url}/stream/publish/",
                json={"channel": channel, "data": data},
                headers=TOKEN,
            )
            assert reply.status_code == 201, reply.text
            ids.append(reply.json()["id"])
    return ids


async def read_until(stream: EventStream, stop: Callable[[Event], bool]) -> list[Event]:
    events = []
    while True:
        event = await stream.next_event(10)
        events.append(event)
        if stop(event):
            return events


@pytest.mark.parametrize("resume", ["first_id", "0-0"])
@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_replay_resumes_a_client_many_times_max_queue_behind(
    server_factory: Callable[..., Server], backend_env: dict[str, str], resume: str
) -> None:
    worker = server_factory("uvicorn", backend_env)
    sent = await publish_many(worker, "alpha", list(range(HISTORY)))
    after = sent[0] if resume == "first_id" else "0-0"
    expected = list(range(1, HISTORY)) if resume == "first_id" else list(range(HISTORY))
    stream = await EventStream(
        f"{worker.url}/sse/?channel=alpha", headers={"Last-Event-ID": after}
    ).open()
    try:
        assert stream.status_code == 200
        events = await read_until(stream, lambda e: e.event == "ready")
        if resume == "0-0" and events[0].event == "reset":
            # "0-0" is older than any id this history began with: it may say so, once.
            events = events[1:]
        replayed = events[:-1]
        assert [e.event for e in replayed] == [None] * len(replayed)
        assert [int(e.data or "") for e in replayed] == expected
        assert [e.id for e in replayed] == sent[-len(expected) :]
        (live,) = await publish_many(worker, "alpha", ["live"])
        event = await stream.next_event(10)
        assert (event.data, event.id) == ("live", live)
    finally:
        await stream.close()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
async def test_replay_memory_stays_bounded_for_concurrent_full_replays(
    server_factory: Callable[..., Server], redis_env: dict[str, str]
) -> None:
    """20 clients replaying 1,000 events of 10 KB (10 MB each) from ``0-0`` at once.

    Loading each history whole would hold 20 x 10 MB at the same moment; paged, a session
    holds at most a page plus its queue.
    """
    # A small queue: what a session may hold is a few times its queue, whatever the history.
    settings = {"MAX_QUEUE": 10, "HISTORY_SIZE": 2000}
    env = {**redis_env, "STREAM_APP_JSON": json.dumps(settings), "STREAM_KEEP_ALIVE": "5"}
    worker = server_factory("uvicorn", env)
    big = "x" * 10_000
    await publish_many(worker, "alpha", [f"{i}:{big}" for i in range(1000)])
    # Warm up the stream path once, then measure the peak from here.
    warm = await EventStream(f"{worker.url}/sse/?channel=alpha").open()
    await read_until(warm, lambda e: e.event == "ready")
    await warm.close()
    before = status_kb(worker.proc.pid, "VmHWM")
    clients = 20
    counts: list[int] = []
    streams = [
        EventStream(f"{worker.url}/sse/?channel=alpha", headers={"Last-Event-ID": "0-0"})
        for _ in range(clients)
    ]

    async def read_some(stream: EventStream) -> None:
        await stream.open()
        seen = 0
        try:
            # A slow reader: a few events, then it waits while the others start.
            while seen < 100:
                try:
                    event = await stream.next_event(10)
                except EOFError:
                    return
                if event.event is None:
                    seen += 1
        finally:
            counts.append(seen)

    try:
        await asyncio.gather(*(read_some(s) for s in streams))
        await asyncio.sleep(1)
        peak = status_kb(worker.proc.pid, "VmHWM")
    finally:
        await asyncio.gather(*(s.close() for s in streams))
    # Loaded whole, 20 x 10 MB of history costs 20 x 10 MB several times over (the first
    # version grew by about 390 MB here); paged, a few MB per session (pages, queue, buffers
    # of the server and of Redis' client) whatever the history: allow half of 20 x 10 MB.
    assert peak - before < 100_000, (before, peak)
    assert counts == [100] * clients
