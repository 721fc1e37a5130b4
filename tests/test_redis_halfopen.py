"""A worker whose path to Redis is cut half-open (no FIN, no RST) notices it and loses nothing.

The worker (real uvicorn, Redis backend) reaches a real Redis through ``tests.tcp_proxy``;
events are published straight to Redis, as another worker on a healthy path would.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from django.test import override_settings

from stream_app.backends.base import Message
from stream_app.backends.redis import RedisBackend
from stream_app.backends.redis.listener import PING_EVERY, SILENCE
from stream_app.testing import EventStream
from tests.conftest import RedisServer, Server
from tests.tcp_proxy import FreezableProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]


@pytest.fixture
async def proxy(private_redis: RedisServer) -> AsyncIterator[FreezableProxy]:
    found = await FreezableProxy(private_redis.port).start()
    yield found
    await found.close()


@pytest.fixture
def direct(private_redis: RedisServer) -> Iterator[RedisBackend]:
    """A publisher on a healthy path straight to Redis, with the workers' key prefix."""
    prefix = f"half{time.monotonic_ns()}"
    options = {"REDIS_URL": private_redis.url, "KEY_PREFIX": prefix}
    with override_settings(STREAM_APP=options):
        yield RedisBackend()


async def open_stream(server: Server, query: str) -> EventStream:
    stream = await EventStream(f"{server.url}/sse/?{query}").open()
    while (await stream.next_event()).event != "ready":
        pass
    return stream


async def test_redis_half_open_listener_is_replaced_and_catches_up(
    server_factory: Callable[..., Server], proxy: FreezableProxy, direct: RedisBackend
) -> None:
    env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": f"redis://127.0.0.1:{proxy.port}/0",
        "STREAM_KEY_PREFIX": direct.prefix,
        "STREAM_KEEP_ALIVE": "0.3",
    }
    worker = server_factory("uvicorn", env)
    stream = await open_stream(worker, "channel=alpha")
    try:
        first = direct.publish_sync(Message("alpha", "before"))
        assert (await stream.next_event(5)).id == first
        proxy.freeze()
        cut = time.monotonic()
        ids = [direct.publish_sync(Message("alpha", f"frozen {i}")) for i in range(3)]
        # A second of a dead network (new connections hang too), then the path heals: the old
        # connections stay half-open for good, as a forgotten flow does.
        await asyncio.sleep(1.0)
        proxy.thaw()
        ids += [direct.publish_sync(Message("alpha", f"after {i}")) for i in range(3)]
        # Documented bound (stream_app.backends.redis.listener): silence for SILENCE s after
        # the last PING answer, plus one PING interval, plus a reconnect.
        bound = SILENCE + 2 * PING_EVERY + 3.0
        got = [(await stream.next_event(bound + 5)).id for _ in ids]
        assert got == ids
        assert time.monotonic() - cut < bound + 5
        with pytest.raises(TimeoutError):
            await stream.next_event(0.5)
        log = worker.log.read_text()
        assert f"lost Redis at redis://127.0.0.1:{proxy.port}/0" in log
        assert proxy.connections >= 2
    finally:
        await stream.close()
