"""Generations across workers on the Redis backend: a daphne and a uvicorn process, one Redis.

A generation runs on the worker that received the POST; any other worker resumes it from the
backend's history and follows its live tail, cancels it, and counts as a listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from typing import Any

import httpx
import pytest
import redis

from stream_app.backends.base import id_key
from stream_app.backends.redis.leases import PRESENCE_TTL
from stream_app.protocol import Event
from stream_app.testing import EventStream
from tests.conftest import RedisServer
from tests.fake_openai import FakeOpenAI
from tests.llm_support import (
    PostStream,
    chat_client_factory,  # noqa: F401 (fixture)
    expected_tokens,
    fake_openai,  # noqa: F401 (fixture)
    llm_env,
    page_history,
    read_until_tokens,
    token_text,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
# Long enough for a loaded machine to switch workers, short enough to wait out in a test.
GRACE = 3.0


@pytest.fixture
def workers(
    server_factory: Any,
    redis_env: dict[str, str],
    fake_openai: FakeOpenAI,  # noqa: F811
) -> tuple[Any, Any]:
    """Two workers of different kinds sharing one Redis (and one key prefix), warmed up."""
    env = llm_env(fake_openai, STREAM_GENERATION_GRACE=str(GRACE), **redis_env)
    servers = server_factory("daphne", env), server_factory("uvicorn", env)
    for server in servers:
        # The first request imports the views (and the openai SDK): keep it out of the timings.
        assert httpx.get(f"{server.url}/", timeout=20).status_code == 200
    return servers


async def test_generation_resumed_on_another_worker_loses_and_duplicates_no_token(
    workers: tuple[Any, Any],
    chat_client_factory: Any,  # noqa: F811
) -> None:
    first, second = workers
    client = await chat_client_factory(first.url)
    stream = await PostStream(
        f"{first.url}/chat/send/", {"message": "[tokens=300] [delay=5]"}, client=client
    ).open()
    events = await read_until_tokens(stream, 4)
    await stream.close()
    meta = json.loads(events[0].data or "")
    last_id = events[-1].id or ""
    async with EventStream(
        f"{second.url}{meta['stream_url']}", client=client, headers={"Last-Event-ID": last_id}
    ) as resumed:
        assert resumed.status_code == 200
        rest = await resumed.read_all()
    assert rest[-1].event == "done"
    assert token_text(events) + token_text(rest) == expected_tokens(300)
    keys = [id_key(e.id or "") for e in events + rest]
    assert keys == sorted(keys)
    assert len(set(keys)) == len(keys)
    # And a reload on the second worker replays the whole answer, finished.
    async with EventStream(f"{second.url}{meta['stream_url']}", client=client) as replay:
        everything: list[Event] = await replay.read_all()
    assert token_text(everything) == expected_tokens(300)


async def test_generation_cancelled_from_another_worker(
    workers: tuple[Any, Any],
    chat_client_factory: Any,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    first, second = workers
    client = await chat_client_factory(first.url)
    stream = await PostStream(
        f"{first.url}/chat/send/", {"message": "[tokens=3000] [delay=20]"}, client=client
    ).open()
    events = await read_until_tokens(stream, 2)
    call = fake_openai.last_call()
    meta = json.loads(events[0].data or "")
    asked = time.monotonic()
    response = await client.post(f"{second.url}{meta['cancel_url']}")
    assert response.status_code == 202
    events += await stream.read_all()
    await stream.close()
    done = json.loads(events[-1].data or "")
    assert done["finish_reason"] == "cancelled"
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, 5.0)
    assert closed is not None
    assert closed - asked < 1.5


async def watched_elsewhere(
    client: httpx.AsyncClient, fake: FakeOpenAI, producer: Any, other: Any
) -> tuple[Any, EventStream]:
    """A long answer started on ``producer``, then watched only from ``other``: its upstream
    call and the other worker's stream."""
    stream = await PostStream(
        f"{producer.url}/chat/send/", {"message": "[tokens=3000] [delay=20]"}, client=client
    ).open()
    events = await read_until_tokens(stream, 2)
    call = fake.last_call()
    meta = json.loads(events[0].data or "")
    watcher = await EventStream(f"{other.url}{meta['stream_url']}", client=client).open()
    await read_until_tokens(watcher, 2)
    await stream.close()
    return call, watcher


async def test_generation_listener_on_another_worker_keeps_it_alive(
    workers: tuple[Any, Any],
    chat_client_factory: Any,  # noqa: F811
    fake_openai: FakeOpenAI,  # noqa: F811
) -> None:
    first, second = workers
    client = await chat_client_factory(first.url)
    call, watcher = await watched_elsewhere(client, fake_openai, first, second)
    # Only the second worker listens now: past the grace period the answer still streams.
    await asyncio.sleep(GRACE + 1.5)
    assert call.closed_at is None
    await read_until_tokens(watcher, 2)
    await watcher.close()
    left = time.monotonic()
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, GRACE + 5)
    assert closed is not None
    assert closed - left >= GRACE - 0.3


async def test_generation_of_a_dead_worker_that_cannot_be_rerun_is_reported_interrupted(
    server_factory: Any,
    redis_env: dict[str, str],
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    env = llm_env(fake_openai, STREAM_GENERATION_GRACE="1", STREAM_LLM_TIMEOUT="1", **redis_env)
    doomed, survivor = server_factory("uvicorn", env), server_factory("daphne", env)
    client = await chat_client_factory(doomed.url)
    stream = await PostStream(
        f"{doomed.url}/chat/send/", {"message": "[tokens=3000] [delay=20]"}, client=client
    ).open()
    events = await read_until_tokens(stream, 2)
    meta = json.loads(events[0].data or "")
    doomed.stop(signal.SIGKILL)
    await stream.close()
    # Without its record (expired, or a source that cannot be rerun) nobody can take it over.
    store = redis.Redis.from_url(redis_env["REDIS_URL"])
    try:
        record = f"{redis_env['STREAM_KEY_PREFIX']}:lease:{{generation:{meta['id']}}}:run"
        assert store.delete(record) == 1
    finally:
        store.close()
    # Its history is still in Redis, unfinished: first it looks alive, then orphaned.
    url = f"{survivor.url}{meta['stream_url']}"
    assert (await client.head(url)).status_code == 200
    deadline = time.monotonic() + 15
    while (await client.head(url)).status_code != 204:
        assert time.monotonic() < deadline, "the orphaned generation was never reported"
        await asyncio.sleep(0.5)
    # The same visitor (same cookies) loads the page from the surviving worker.
    async with httpx.AsyncClient(base_url=survivor.url, cookies=client.cookies) as same:
        history = await page_history(same)
    assert history[-1]["status"] == "error"
    assert history[-1]["error_code"] == "interrupted"


def private_env(fake: FakeOpenAI, server: RedisServer, grace: float) -> dict[str, str]:
    """Workers on a Redis of the test's own: its command counts are the workers' alone."""
    return llm_env(
        fake,
        STREAM_GENERATION_GRACE=str(grace),
        STREAM_BACKEND="redis",
        REDIS_URL=server.url,
        STREAM_KEY_PREFIX="push",
    )


def warm(*servers: Any) -> None:
    """Load the page once per worker: imports stay out of the measures."""
    for server in servers:
        assert httpx.get(f"{server.url}/", timeout=20).status_code == 200


def command_calls(store: redis.Redis, *names: str) -> int:
    """How often Redis ran the commands ``names`` since it started (``INFO commandstats``)."""
    stats = store.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in names)


async def test_generation_cancel_from_another_worker_is_pushed_and_nobody_polls(
    server_factory: Any,
    private_redis: RedisServer,
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    env = private_env(fake_openai, private_redis, GRACE)
    first, second = server_factory("uvicorn", env), server_factory("uvicorn", env)
    warm(first, second)
    client = await chat_client_factory(first.url)
    stream = await PostStream(
        f"{first.url}/chat/send/", {"message": "[tokens=3000] [delay=20]"}, client=client
    ).open()
    events = await read_until_tokens(stream, 2)
    call = fake_openai.last_call()
    store = redis.Redis.from_url(private_redis.url)
    try:
        # While it runs, the producer reads no history (a cancel is pushed to it) and asks no
        # worker how many sessions it has (presence is a key): those counts do not grow.
        reads, asks = (
            command_calls(store, "xrange", "xrevrange", "xread"),
            command_calls(store, "blpop"),
        )
        await asyncio.sleep(3)
        assert command_calls(store, "xrange", "xrevrange", "xread") - reads <= 1
        assert command_calls(store, "blpop") - asks == 0
    finally:
        store.close()
    meta = json.loads(events[0].data or "")
    asked = time.monotonic()
    response = await client.post(f"{second.url}{meta['cancel_url']}")
    assert response.status_code == 202
    events += await stream.read_all()
    await stream.close()
    assert json.loads(events[-1].data or "")["finish_reason"] == "cancelled"
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, 5.0)
    assert closed is not None
    assert closed - asked < 1.0


async def test_generation_watcher_killed_stops_counting_within_the_presence_ttl(
    server_factory: Any,
    private_redis: RedisServer,
    fake_openai: FakeOpenAI,  # noqa: F811
    chat_client_factory: Any,  # noqa: F811
) -> None:
    grace = 1.0
    env = private_env(fake_openai, private_redis, grace)
    producer, doomed = server_factory("uvicorn", env), server_factory("uvicorn", env)
    warm(producer, doomed)
    client = await chat_client_factory(producer.url)
    call, watcher = await watched_elsewhere(client, fake_openai, producer, doomed)
    # The other worker's session alone keeps it going past the grace period...
    await asyncio.sleep(grace + 1.5)
    assert call.closed_at is None
    # ...until that worker dies without a word: then it is cancelled for lack of listeners
    # within the presence TTL, the grace period and one check.
    doomed.stop(signal.SIGKILL)
    killed = time.monotonic()
    bound = PRESENCE_TTL + grace + 1.0
    closed = await asyncio.to_thread(fake_openai.wait_closed, call, bound + 5)
    with contextlib.suppress(httpx.HTTPError, OSError):
        await watcher.close()
    assert closed is not None
    assert closed - killed <= bound
