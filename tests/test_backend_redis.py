"""The Redis backend in this process, against a real Redis: ids, history, trimming, TTLs."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.test import AsyncRequestFactory, override_settings

from stream_app import protocol
from stream_app.backends import get_backend, reset_backend
from stream_app.backends.base import Message, id_key
from stream_app.backends.redis import RedisBackend
from stream_app.channels import get_channel, subscribe
from stream_app.sessions import Session
from tests.conftest import RedisServer, free_port

factory = AsyncRequestFactory()


@pytest.fixture
def backend(redis_server: RedisServer) -> Iterator[RedisBackend]:
    if redis_server.proc is None:
        redis_server.start()
    prefix = f"unit{time.monotonic_ns()}"
    options = {
        "BACKEND": "stream_app.backends.redis.RedisBackend",
        "REDIS_URL": redis_server.url,
        "KEY_PREFIX": prefix,
        "HISTORY_SIZE": 5,
    }
    with override_settings(STREAM_APP=options):
        reset_backend()
        found = get_backend()
        assert isinstance(found, RedisBackend)
        yield found
    reset_backend()


async def publish(backend: RedisBackend, channel: str, data: str, **kw: Any) -> str:
    return await backend.publish(Message(channel, data, **kw))


async def test_redis_ids_grow_across_channels_and_sync_publishers(backend: RedisBackend) -> None:
    ids = [
        await publish(backend, "a", "1"),
        await publish(backend, "b", "2"),
        backend.publish_sync(Message("a", "3")),
        await publish(backend, "b", "4"),
    ]
    keys = [id_key(i) for i in ids]
    assert None not in keys
    assert keys == sorted(keys)  # type: ignore[type-var]
    assert len(set(ids)) == 4
    await backend.aclose()


async def test_redis_history_merges_channels_in_id_order(backend: RedisBackend) -> None:
    mark = await publish(backend, "a", "mark")
    sent = [
        await publish(backend, "a", "a1", event="x"),
        await publish(backend, "b", "b1", filter={"plan": "pro"}),
        await publish(backend, "a", "a2"),
    ]
    history = await backend.history(["a", "b", "unused"], mark)
    assert history.complete
    assert [(m.channel, m.data, m.id) for m in history.messages] == [
        ("a", "a1", sent[0]),
        ("b", "b1", sent[1]),
        ("a", "a2", sent[2]),
    ]
    assert history.messages[0].event == "x"
    assert history.messages[1].filter == {"plan": "pro"}
    await backend.aclose()


async def test_redis_history_is_incomplete_once_trimmed_past_the_id(
    backend: RedisBackend,
) -> None:
    mark = await publish(backend, "t", "mark")
    for i in range(300):
        await publish(backend, "t", str(i))
    history = await backend.history(["t"], mark)
    assert not history.complete
    recent = history.messages[-1].id
    for i in range(3):
        await publish(backend, "t", f"new{i}")
    assert (await backend.history(["t"], recent)).complete
    await backend.aclose()


async def test_redis_history_of_a_lost_epoch_is_incomplete(backend: RedisBackend) -> None:
    await publish(backend, "e", "x")
    history = await backend.history(["e"], "1000-0")
    assert not history.complete
    await backend.aclose()


async def test_redis_every_key_has_a_ttl(backend: RedisBackend, redis_server: RedisServer) -> None:
    for channel in ("k1", "k2"):
        await publish(backend, channel, "x")
    client = redis.Redis(port=redis_server.port)
    try:
        keys = {key.decode() for key in client.scan_iter(f"{backend.prefix}:*")}
        names = ("s:k1", "s:k2", "last", "epoch", "primary")
        assert keys == {f"{backend.prefix}:{name}" for name in names}
        assert all(0 < client.pttl(key) <= 24 * 3600 * 1000 for key in keys)
    finally:
        client.close()
    await backend.aclose()


async def test_redis_publish_without_redis_raises_backend_unavailable() -> None:
    from stream_app.backends.base import BackendUnavailable

    with override_settings(
        STREAM_APP={
            "BACKEND": "stream_app.backends.redis.RedisBackend",
            "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        }
    ):
        reset_backend()
        backend = get_backend()
        with pytest.raises(BackendUnavailable, match="unreachable"):
            await backend.publish(Message("x", "y"))
        with pytest.raises(BackendUnavailable):
            backend.publish_sync(Message("x", "y"))
        assert not await backend.ping()
        await backend.aclose()
    reset_backend()


@pytest.mark.parametrize(
    "last_id", ["99999999999999999999999-0", "1-18446744073709551616", "\u00b2-1"]
)
async def test_redis_out_of_range_id_is_invalid_id_without_traceback(
    backend: RedisBackend, last_id: str, caplog: pytest.LogCaptureFixture
) -> None:
    channel = get_channel("range")
    session = Session(
        factory.get("/sse/", headers={"Last-Event-ID": last_id}),
        retry=None,
        keep_alive=None,
        state={},
    )
    with caplog.at_level(logging.DEBUG, logger="stream_app"):
        await subscribe(session, [channel])
    events = protocol.decode(b"".join(session._queue))
    assert events[0].event == "reset"
    assert json.loads(events[0].data or "")["reason"] == "invalid_id"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    session._abort("test")
    await backend.aclose()


def restart(server: RedisServer) -> None:
    """Kill -9 and start again on the same port: pooled connections are now stale."""
    server.kill()
    server.start()


async def test_redis_first_publish_after_a_restart_succeeds(
    server_factory: Any, private_redis: RedisServer
) -> None:
    env = {"STREAM_BACKEND": "redis", "REDIS_URL": private_redis.url}
    server = server_factory("uvicorn", env)
    body = {"channel": "news", "data": "x"}
    headers = {"Authorization": "Bearer test-token"}
    async with httpx.AsyncClient(base_url=server.url, timeout=10, headers=headers) as client:
        assert (await client.post("/stream/publish/", json=body)).status_code == 201
        restart(private_redis)
        response = await client.post("/stream/publish/", json=body)
        assert response.status_code == 201, response.text


async def test_redis_sync_and_async_publish_survive_a_restart(private_redis: RedisServer) -> None:
    options = {"BACKEND": "stream_app.backends.redis.RedisBackend", "REDIS_URL": private_redis.url}
    with override_settings(STREAM_APP=options):
        reset_backend()
        backend = get_backend()
        await publish(backend, "r", "1")
        backend.publish_sync(Message("r", "2"))
        restart(private_redis)
        assert id_key(await publish(backend, "r", "3"))
        assert id_key(backend.publish_sync(Message("r", "4")))
        await backend.aclose()
    reset_backend()


async def test_redis_unencodable_publish_is_refused_and_never_recorded(
    backend: RedisBackend,
) -> None:
    channel = get_channel("surrogate")
    first = await channel.abroadcast("first")
    with pytest.raises(UnicodeEncodeError):
        await channel.abroadcast("\ud800")
    with pytest.raises(UnicodeEncodeError):
        channel.broadcast({"text": "\udfff"})
    second = await channel.abroadcast("second")
    history = await backend.history(["surrogate"], first)
    assert history.complete
    assert [(m.data, m.id) for m in history.messages] == [("second", second)]
    await backend.aclose()


async def test_redis_change_of_server_makes_crossing_what_it_may_have_lost_a_reset(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    """A new server under the same history (failover, restart with persistence) is noticed
    on the next new connection: a client that would cross what the old one may have issued
    after this one's last id gets an incomplete history (a reset); new ids replay as usual."""
    kept = await publish(backend, "h", "kept")
    ms, _, seq = kept.partition("-")
    # An id the old server issued to a client after ``kept``, lost with it.
    lost = f"{ms}-{int(seq) + 1}"
    client = redis.Redis(port=redis_server.port)
    try:
        client.set(f"{backend.prefix}:primary", "a-server-that-is-gone")
    finally:
        client.close()
    await backend.client().connection_pool.disconnect()
    after = await publish(backend, "h", "after")
    assert id_key(after) > id_key(lost)  # type: ignore[operator]
    for position in (lost, kept):
        crossing = await backend.history(["h"], position)
        assert not crossing.complete
        assert [m.data for m in crossing.messages] == ["after"]
    later = await publish(backend, "h", "later")
    beyond = await backend.history(["h"], after)
    assert beyond.complete
    assert [m.id for m in beyond.messages] == [later]
    await backend.aclose()


async def test_redis_change_of_server_is_one_reset_per_live_session(
    backend: RedisBackend, redis_server: RedisServer
) -> None:
    """A session that stays connected across a change of server learns of what may be lost
    once, whatever the number of its channels, then receives the new server's events."""
    first, second = get_channel("lost-a"), get_channel("lost-b")
    session = Session(factory.get("/sse/"), retry=None, keep_alive=None, state={})
    await subscribe(session, [first, second])
    delivered = await first.abroadcast("before")
    for _ in range(500):
        if session.queued:
            break
        await asyncio.sleep(0.02)
    assert session.queued == 1
    client = redis.Redis(port=redis_server.port)
    try:
        client.set(f"{backend.prefix}:primary", "a-server-that-is-gone")
        # The listener's new connection notes the change, and the listener the hole.
        client.client_kill_filter(_type="pubsub")
    finally:
        client.close()
    for _ in range(500):
        if backend.reconnects and backend.connected:
            break
        await asyncio.sleep(0.02)
    assert backend.reconnects >= 1
    assert backend.connected
    after = await second.abroadcast("after")
    events: list[protocol.Event] = []
    async with asyncio.timeout(10):
        async for chunk in session.response:
            events.extend(protocol.decode(chunk))
            if events[-1].id == after:
                session.close()
    lost = {"reason": "history_lost", "last_event_id": delivered}
    seen = [(e.event, json.loads(e.data or "") if e.event else e.data) for e in events]
    assert seen == [
        (None, "before"),
        ("reset", lost),
        (None, "after"),
    ]
    await backend.aclose()


async def test_redis_publish_burst_waits_for_the_bounded_pool(redis_server: RedisServer) -> None:
    """More concurrent publishes than REDIS_MAX_CONNECTIONS: each waits for a connection (no
    "too many connections" error) and Redis never sees more than the cap from the pool."""
    options = {
        "REDIS_URL": redis_server.url,
        "KEY_PREFIX": f"pool{time.monotonic_ns()}",
        "REDIS_MAX_CONNECTIONS": 3,
    }
    client = redis.Redis(port=redis_server.port)
    try:
        before = len(client.client_list())
        with override_settings(STREAM_APP=options):
            backend = RedisBackend()
            ids = await asyncio.gather(*(publish(backend, "burst", str(i)) for i in range(200)))
            during = len(client.client_list())
            await backend.aclose()
        assert len(set(ids)) == 200
        assert during - before <= 3
    finally:
        client.close()


@pytest.fixture
def unix_redis(tmp_path: Path) -> Iterator[Path]:
    """A redis-server listening on a Unix socket only."""
    path = tmp_path / "redis.sock"
    proc = subprocess.Popen(
        ["redis-server", "--port", "0", "--unixsocket", str(path), "--save", ""],
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not path.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    yield path
    proc.kill()
    proc.wait(10)


async def test_redis_over_a_unix_socket(unix_redis: Path) -> None:
    options = {"REDIS_URL": f"unix://{unix_redis}?db=0", "KEY_PREFIX": "unix"}
    with override_settings(STREAM_APP=options):
        backend = RedisBackend()
        got: list[Message] = []
        backend.deliver = got.append
        backend.subscribe("u")
        assert await backend.ready("u", 5)
        sent = await publish(backend, "u", "over unix")
        assert backend.publish_sync(Message("u", "sync"))
        for _ in range(100):
            if len(got) == 2:
                break
            await asyncio.sleep(0.05)
        assert [m.data for m in got] == ["over unix", "sync"]
        assert (await backend.history(["u"], "0-0")).messages[0].id == sent
        await backend.aclose()


async def test_redis_listener_failing_otherwise_logs_and_restarts(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """Not only network errors: whatever stops the listener (here a connection option
    redis-py refuses) is logged, without the password, and the listener tries again."""
    url = redis_server.url.replace("redis://", "redis://:pw-123456@")
    options = {"REDIS_URL": url, "REDIS_OPTIONS": {"no_such_option": 1}, "KEY_PREFIX": "bad"}
    with override_settings(STREAM_APP=options), caplog.at_level(logging.INFO, "stream_app"):
        backend = RedisBackend()
        backend.subscribe("x")
        for _ in range(100):
            if backend.reconnects >= 3:
                break
            await asyncio.sleep(0.05)
        await backend.aclose()
    assert backend.reconnects >= 3
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors
    assert "listener failed at redis://:***@127.0.0.1" in errors[0]
    assert "no_such_option" in errors[0]
    assert "pw-123456" not in caplog.text


async def test_redis_listener_drops_malformed_messages_and_goes_on(
    backend: RedisBackend, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """What another program (or older code) publishes on our pub/sub channels in a shape we
    do not know is dropped with a warning (a bad event) or ignored (a bad count request);
    delivery and counts go on."""
    got: list[Message] = []
    backend.deliver = got.append
    backend.subscribe("m")
    assert await backend.ready("m", 5)
    client = redis.Redis(port=redis_server.port)
    try:
        client.publish(backend.live_key("m"), "99999999999999-0 not json")
        client.publish(backend.live_key("m"), "not-an-id {}")
        client.publish(backend.control_key, "not json")
        client.publish(backend.control_key, json.dumps({"channel": "m"}))
    finally:
        client.close()
    good = await publish(backend, "m", "good")
    for _ in range(100):
        if got:
            break
        await asyncio.sleep(0.05)
    assert [(m.data, m.id) for m in got] == [("good", good)]
    assert "dropped a malformed message on channel 'm'" in caplog.text
    # The one worker listening (this one) answers: no session here matches.
    assert await backend.count("m", None) == 0
    await backend.aclose()


async def test_redis_history_after_a_malformed_id_is_incomplete_and_empty(
    backend: RedisBackend,
) -> None:
    await publish(backend, "h", "x")
    history = await backend.history(["h"], "not-an-id")
    assert (history.messages, history.complete) == ([], False)
    await backend.aclose()
