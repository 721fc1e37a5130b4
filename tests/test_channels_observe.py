"""``Channel.observe``: hearing a channel in this process without being a session.

A generation's producer observes its channel to hear a ``cancel`` published by any worker: the
observer must keep the process subscribed (also once the last session left) and must count as
no session (no presence, no count).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from django.test import override_settings

from stream_app.backends import get_backend, reset_backend
from stream_app.backends.base import Message
from stream_app.channels import get_channel
from stream_app.sessions import Session
from tests.conftest import RedisServer


@pytest.fixture
def memory() -> Iterator[None]:
    reset_backend()
    yield
    reset_backend()


async def test_observer_hears_deliveries_and_counts_as_no_session(memory: None) -> None:
    channel = get_channel("observed-memory")
    heard: list[Message] = []
    stop = channel.observe(heard.append)
    await channel.abroadcast({"reason": "user"}, "cancel")
    assert [(m.event, m.data) for m in heard] == [("cancel", '{"reason":"user"}')]
    assert channel.session_count == 0
    assert not await get_backend().has_presence(channel.name)
    stop()
    stop()  # idempotent
    await channel.abroadcast("again")
    assert len(heard) == 1


async def test_observer_keeps_the_process_subscribed_on_redis(redis_server: RedisServer) -> None:
    if redis_server.proc is None:
        redis_server.start()
    options = {
        "BACKEND": "stream_app.backends.redis.RedisBackend",
        "REDIS_URL": redis_server.url,
        "KEY_PREFIX": f"observe{time.monotonic_ns()}",
    }
    with override_settings(STREAM_APP=options):
        reset_backend()
        backend = get_backend()
        try:
            channel = get_channel(f"observed-{time.monotonic_ns()}")
            heard: list[str | None] = []
            stop = channel.observe(lambda message: heard.append(message.event))
            assert await backend.ready(channel.name, 5)
            # A session comes and goes: the observer still holds the subscription.
            session = Session(None)
            channel.register(session)
            channel.deregister(session)
            await asyncio.sleep(0.2)
            # Published through Redis (as by another worker): heard through the listener.
            await channel.abroadcast({"reason": "user"}, "cancel")
            deadline = time.monotonic() + 5
            while not heard:
                assert time.monotonic() < deadline, "the observer heard nothing"
                await asyncio.sleep(0.02)
            assert heard == ["cancel"]
            stop()
        finally:
            await backend.aclose()
            reset_backend()
