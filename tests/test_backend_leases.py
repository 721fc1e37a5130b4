"""Leases and presence, the backend's cross-process facts: in-process (memory) and on Redis.

The same contract on both: one holder at a time, a heartbeat that expires unless its holder
renews it, a record that outlives it, and presence marks that a dead process cannot keep.
Two workers are two tokens (``backend.worker``), as two processes would have.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from django.test import override_settings

from stream_app.backends.base import Backend, LeaseState
from stream_app.backends.memory import MemoryBackend
from stream_app.backends.redis import RedisBackend
from stream_app.backends.redis import leases as redis_leases
from stream_app.channels import get_channel
from stream_app.sessions import Session
from tests.conftest import RedisServer

RECORD = {"request": {"model": "m"}, "grace": 3}


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    if server.proc is None:
        server.start()
    options = {"REDIS_URL": server.url, "KEY_PREFIX": f"lease{time.monotonic_ns()}"}
    with override_settings(STREAM_APP=options):
        found = RedisBackend()
        yield found
        await found.aclose()


def as_worker(backend: Backend, token: str) -> Backend:
    backend.worker = token
    return backend


async def test_lease_start_holds_it_and_keeps_the_record(backend: Backend) -> None:
    assert await as_worker(backend, "a").lease_start("job:1", RECORD, 5)
    state = await backend.lease_state("job:1")
    assert state is not None
    assert state.record == RECORD
    assert state.alive
    assert await backend.lease_alive("job:1")
    # Held: nobody else gets it, and its holder renews it.
    assert not await as_worker(backend, "b").lease_claim("job:1", 5)
    assert not await backend.lease_renew("job:1", 5)
    assert not await backend.lease_reclaim("job:1", 5)
    assert await as_worker(backend, "a").lease_renew("job:1", 5)
    assert await backend.lease_reclaim("job:1", 5)


async def test_lease_expired_is_claimed_by_exactly_one_worker(backend: Backend) -> None:
    await as_worker(backend, "a").lease_start("job:2", RECORD, 0.2)
    await asyncio.sleep(0.3)
    state = await backend.lease_state("job:2")
    assert state is not None
    assert state.record == RECORD, "the record outlives the heartbeat"
    assert not state.alive
    assert not await backend.lease_alive("job:2")
    # The old holder that stalled past its TTL cannot renew it any more.
    assert not await backend.lease_renew("job:2", 5)
    assert await as_worker(backend, "b").lease_claim("job:2", 5)
    assert not await as_worker(backend, "c").lease_claim("job:2", 5)
    # ...nor hold it again, now that another worker has it.
    assert not await as_worker(backend, "a").lease_reclaim("job:2", 5)
    await as_worker(backend, "b").lease_update("job:2", {**RECORD, "worker": "b"})
    state = await backend.lease_state("job:2")
    assert state is not None
    assert state.record == {**RECORD, "worker": "b"}


async def test_lease_release_and_drop_only_by_the_holder(backend: Backend) -> None:
    await as_worker(backend, "a").lease_start("job:3", RECORD, 5)
    await as_worker(backend, "b").lease_release("job:3")
    assert await backend.lease_alive("job:3"), "only its holder lets a lease go"
    await as_worker(backend, "a").lease_release("job:3")
    assert not await backend.lease_alive("job:3")
    # Released: the next claim wins at once, and reclaiming a free lease holds it.
    assert await as_worker(backend, "b").lease_claim("job:3", 5)
    await backend.lease_drop("job:3")
    assert await backend.lease_state("job:3") == LeaseState(None, False)
    assert await backend.lease_reclaim("job:3", 5)


async def test_presence_in_process_counts_this_process_sessions() -> None:
    backend = MemoryBackend()
    channel = get_channel("presence-memory")
    backend.count_local = lambda name, spec: get_channel(name).count_matching(spec)
    assert not await backend.has_presence(channel.name)
    session = Session(None)
    channel.register(session)
    try:
        assert await backend.has_presence(channel.name)
    finally:
        channel.deregister(session)
    assert not await backend.has_presence(channel.name)


async def test_presence_on_redis_is_seen_by_every_worker_and_dies_with_its_worker(
    redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    if redis_server.proc is None:
        redis_server.start()
    options = {"REDIS_URL": redis_server.url, "KEY_PREFIX": f"presence{time.monotonic_ns()}"}
    # A short TTL keeps the test short; the bound is the same code at any TTL.
    monkeypatch.setattr(redis_leases, "PRESENCE_TTL", 0.5)
    monkeypatch.setattr(redis_leases, "PRESENCE_EVERY", 0.1)
    with override_settings(STREAM_APP=options):
        watcher, producer = RedisBackend(), RedisBackend()
    watcher.worker, producer.worker = "watcher", "producer"
    try:
        assert not await producer.has_presence("generation:x")
        watcher.add_presence("generation:x")
        await wait_until(lambda: producer.has_presence("generation:x"), True)
        # Renewed while present: it outlives its TTL.
        await asyncio.sleep(0.8)
        assert await producer.has_presence("generation:x")
        watcher.remove_presence("generation:x")
        await wait_until(lambda: producer.has_presence("generation:x"), False)
        # A worker that dies (no renewal, no removal) stops counting within the TTL.
        watcher.add_presence("generation:x")
        await wait_until(lambda: producer.has_presence("generation:x"), True)
        assert watcher.presence_task is not None
        watcher.presence_task.cancel()
        died = time.monotonic()
        await wait_until(lambda: producer.has_presence("generation:x"), False)
        assert time.monotonic() - died <= 0.5 + 0.3
        store = redis.Redis.from_url(redis_server.url)
        try:
            key = producer.presence_key("generation:x")
            assert store.pttl(key) > 0 or not store.exists(key), "presence keys expire"
        finally:
            store.close()
    finally:
        await watcher.aclose()
        await producer.aclose()


async def wait_until(check: Any, expected: bool, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while await check() != expected:
        assert time.monotonic() < deadline, f"presence never became {expected}"
        await asyncio.sleep(0.02)
