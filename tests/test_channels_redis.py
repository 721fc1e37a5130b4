"""Channels across real worker processes sharing a real Redis (the Redis backend)."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import redis

from stream_app.protocol import Event
from stream_app.testing import EventStream
from tests.conftest import ROOT, RedisServer, Server, fetch_json, free_port, rss_kb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TOKEN = {"Authorization": "Bearer test-token"}


async def open_stream(server: Server, query: str, **headers: str) -> EventStream:
    """Open a stream and wait for its ``ready`` event (it is subscribed from then on)."""
    stream = await EventStream(f"{server.url}/sse/?{query}", headers=headers).open()
    assert stream.status_code == 200, await stream.response.aread()  # type: ignore[union-attr]
    while (await stream.next_event()).event != "ready":
        pass
    return stream


async def publish(server: Server, body: dict[str, Any], headers: dict[str, str] = TOKEN) -> Any:
    async with httpx.AsyncClient(timeout=10) as client:
        return await client.post(f"{server.url}/stream/publish/", json=body, headers=headers)


async def next_data(stream: EventStream, timeout: float = 5) -> Event:
    """The next event that is not a keep-alive (comments are not events anyway)."""
    return await stream.next_event(timeout)


async def assert_silent(stream: EventStream, seconds: float = 0.3) -> None:
    with pytest.raises(TimeoutError):
        await stream.next_event(seconds)


def publish_from_process(env: dict[str, str], channel: str, data: Any, **kw: Any) -> str:
    """Publish from a separate plain Python process with sync code (no event loop)."""
    code = (
        "import json, sys, django; django.setup()\n"
        "from stream_app import broadcast\n"
        "args = json.loads(sys.argv[1])\n"
        "print(broadcast(args['channel'], args['data'], **args['kw']))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, json.dumps({"channel": channel, "data": data, "kw": kw})],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.server_settings",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


@pytest.fixture
def workers(server_factory: Callable[..., Server], redis_env: dict[str, str]) -> list[Server]:
    """A daphne and a uvicorn worker sharing one Redis."""
    env = {**redis_env, "STREAM_KEEP_ALIVE": "0.3"}
    return [server_factory("daphne", env), server_factory("uvicorn", env)]


async def test_redis_broadcast_reaches_matching_sessions_on_every_worker(
    workers: list[Server], redis_env: dict[str, str], settings: Any
) -> None:
    a, b = workers
    pro_a = await open_stream(a, "channel=alpha&plan=pro")
    free_a = await open_stream(a, "channel=alpha&plan=free")
    pro_b = await open_stream(b, "channel=alpha&plan=pro&tag=beta")
    free_b = await open_stream(b, "channel=alpha&plan=free")
    streams = [pro_a, free_a, pro_b, free_b]
    try:
        response = await publish(
            a, {"channel": "alpha", "data": {"n": 1}, "event": "deal", "filter": {"plan": "pro"}}
        )
        assert response.status_code == 201, response.text
        first = response.json()["id"]
        for stream in (pro_a, pro_b):
            event = await next_data(stream)
            assert (event.event, event.data, event.id) == ("deal", '{"n":1}', first)
        env = {**redis_env, "DJANGO_DB_PATH": settings.DATABASES["default"]["NAME"]}
        second = await asyncio.to_thread(
            publish_from_process, env, "alpha", "beta only", filter={"tags__contains": "beta"}
        )
        event = await next_data(pro_b)
        assert (event.data, event.id) == ("beta only", second)
        command = await asyncio.to_thread(
            subprocess.run,
            [
                sys.executable,
                "manage.py",
                "broadcast",
                "alpha",
                "from manage.py",
                "--event",
                "cmd",
                "--filter",
                '{"plan__ne": "pro"}',
            ],
            cwd=ROOT,
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "tests.server_settings", **env},
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )
        from_command = command.stdout.strip()
        for stream in (free_a, free_b):
            event = await next_data(stream)
            assert (event.event, event.data, event.id) == ("cmd", "from manage.py", from_command)
        third = (await publish(b, {"channel": "alpha", "data": "all"})).json()["id"]
        for stream in streams:
            event = await next_data(stream)
            assert (event.data, event.id) == ("all", third)
        for stream in streams:
            await assert_silent(stream, 0.2)
    finally:
        for stream in streams:
            await stream.close()


async def test_redis_replay_across_workers_is_exact(workers: list[Server]) -> None:
    a, b = workers
    stream = await open_stream(a, "channel=beta")
    mark = (await publish(a, {"channel": "beta", "data": "mark"})).json()["id"]
    assert (await next_data(stream)).id == mark
    await stream.close()
    sent = []
    for i in range(20):
        sent.append((await publish(b, {"channel": "beta", "data": i})).json()["id"])
    again = await EventStream(f"{b.url}/sse/?channel=beta", headers={"Last-Event-ID": mark}).open()
    try:
        events = [await next_data(again) for _ in range(21)]
        assert [(e.data, e.id) for e in events[:20]] == [(str(i), sent[i]) for i in range(20)]
        assert events[20].event == "ready"
        live = (await publish(a, {"channel": "beta", "data": "live"})).json()["id"]
        event = await next_data(again)
        assert (event.data, event.id) == ("live", live)
        await assert_silent(again, 0.2)
    finally:
        await again.close()


async def test_redis_listener_catches_up_after_losing_its_connection(
    workers: list[Server], redis_server: RedisServer
) -> None:
    a, b = workers
    stream_a = await open_stream(a, "channel=alpha")
    stream_b = await open_stream(b, "channel=alpha")
    client = redis.Redis(port=redis_server.port)
    try:
        # Drop every listener's pub/sub connection while Redis itself stays up, then publish
        # at once, before the listeners are back: they must catch up from the streams.
        client.client_kill_filter(_type="pubsub")
        ids = [(await publish(a, {"channel": "alpha", "data": i})).json()["id"] for i in range(5)]
        for stream in (stream_a, stream_b):
            got = [await next_data(stream, 10) for _ in range(5)]
            assert [e.id for e in got] == ids
            await assert_silent(stream, 0.3)
    finally:
        client.close()
        await stream_a.close()
        await stream_b.close()


async def test_redis_restart_keeps_workers_up_and_streams_alive(
    workers: list[Server], redis_server: RedisServer
) -> None:
    a, b = workers
    streams = [await open_stream(a, "channel=alpha"), await open_stream(b, "channel=alpha")]
    try:
        before = (await publish(a, {"channel": "alpha", "data": "before"})).json()["id"]
        for stream in streams:
            assert (await next_data(stream)).id == before
        redis_server.stop()
        response = await publish(a, {"channel": "alpha", "data": "lost"})
        assert response.status_code == 503
        assert response.json()["error"] == "backend_unavailable"
        for stream in streams:
            keep_alives = 0
            deadline = time.monotonic() + 1.5
            while time.monotonic() < deadline and keep_alives < 2:
                if await stream.read_chunk(timeout=1) == b":\n\n":
                    keep_alives += 1
            assert keep_alives >= 2
        redis_server.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            response = await publish(b, {"channel": "alpha", "data": "after"})
            if response.status_code == 201:
                break
            await asyncio.sleep(0.2)
        after = response.json()["id"]
        for stream in streams:
            event = await next_data(stream, 10)
            assert (event.data, event.id) == ("after", after)
        assert all(s.proc.poll() is None for s in workers)
    finally:
        for stream in streams:
            await stream.close()


async def test_redis_unreachable_at_start_then_delivery_resumes(
    server_factory: Callable[..., Server],
) -> None:
    port = free_port()
    env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "STREAM_KEEP_ALIVE": "0.3",
        "STREAM_KEY_PREFIX": f"late{time.monotonic_ns()}",
    }
    worker = server_factory("uvicorn", env)
    stream = await open_stream(worker, "channel=alpha")
    late = RedisServer(port)
    try:
        assert (await publish(worker, {"channel": "alpha", "data": "x"})).status_code == 503
        assert await stream.read_chunk(timeout=2) == b":\n\n"
        late.start()
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            response = await publish(worker, {"channel": "alpha", "data": "back"})
            if response.status_code == 201:
                break
            await asyncio.sleep(0.2)
        event = await next_data(stream, 10)
        assert (event.data, event.id) == ("back", response.json()["id"])
    finally:
        await stream.close()
        late.stop()


async def test_redis_stuck_client_is_closed_without_delaying_others(
    server_factory: Callable[..., Server], redis_env: dict[str, str]
) -> None:
    env = {**redis_env, "STREAM_KEEP_ALIVE": "5", "STREAM_APP_JSON": '{"MAX_QUEUE": 20}'}
    worker = server_factory("uvicorn", env)
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", worker.port))
    stuck.sendall(b"GET /sse/?channel=alpha HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    reader = await open_stream(worker, "channel=alpha")
    payload = "x" * 60_000
    try:
        await asyncio.sleep(0.3)
        for _ in range(20):
            responses = await asyncio.gather(
                *(publish(worker, {"channel": "alpha", "data": payload}) for _ in range(10))
            )
            ids = {r.json()["id"] for r in responses}
            # The reader keeps up: every event reaches it while the other client is stuck.
            got = {(await next_data(reader, 5)).id for _ in range(10)}
            assert got == ids
            state = await fetch_json(f"{worker.url}/t/state/")
            if state["slow_consumers"] >= 1:
                break
        assert state["slow_consumers"] == 1
        assert state["channels"].get("alpha") == 1
        assert rss_kb(worker.proc.pid) < 300_000
    finally:
        stuck.close()
        await reader.close()


async def test_redis_connect_disconnect_cycles_leave_nothing_behind(
    server_factory: Callable[..., Server],
    redis_env: dict[str, str],
    redis_server: RedisServer,
) -> None:
    worker = server_factory("uvicorn", redis_env)
    baseline = await fetch_json(f"{worker.url}/t/state/")

    async def cycle(client: httpx.AsyncClient, i: int) -> None:
        async with client.stream(
            "GET",
            f"{worker.url}/sse/?channel=alpha&channel={'beta' if i % 2 else 'news'}",
            headers={"Last-Event-ID": f"{i}-0"},
        ) as response:
            assert response.status_code == 200
            async for chunk in response.aiter_raw():
                if b"event: ready" in chunk:
                    break

    limits = httpx.Limits(max_connections=20, max_keepalive_connections=0)
    async with httpx.AsyncClient(timeout=10, limits=limits) as client:
        for start in range(0, 1000, 20):
            await asyncio.gather(*(cycle(client, i) for i in range(start, start + 20)))
            if start % 200 == 0:
                await publish(worker, {"channel": "alpha", "data": start})
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        state = await fetch_json(f"{worker.url}/t/state/")
        if state["channels"] == {} and state["live"] == baseline["live"]:
            break
        await asyncio.sleep(0.1)
    assert state["channels"] == {}
    assert state["live"] == baseline["live"]
    assert state["tasks"] <= baseline["tasks"] + 3
    client = redis.Redis(port=redis_server.port)
    try:
        keys = list(client.scan_iter(f"{redis_env['STREAM_KEY_PREFIX']}:*"))
        assert keys
        assert all(client.pttl(key) > 0 for key in keys)
    finally:
        client.close()


def publish_unchecked_from_process(
    env: dict[str, str], channel: str, data: str, filter: Any
) -> str:
    """Publish straight through the backend from a separate process: no filter checks at all,
    as older code or a script writing to Redis would."""
    code = (
        "import json, sys, django; django.setup()\n"
        "from stream_app.backends import get_backend\n"
        "from stream_app.backends.base import Message\n"
        "args = json.loads(sys.argv[1])\n"
        "message = Message(args['channel'], args['data'], None, args['filter'])\n"
        "print(get_backend().publish_sync(message))\n"
    )
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            json.dumps({"channel": channel, "data": data, "filter": filter}),
        ],
        cwd=ROOT,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "DJANGO_SETTINGS_MODULE": "tests.server_settings",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    return result.stdout.strip()


async def test_filters_from_another_process_over_the_limits_are_dropped(
    workers: list[Server], redis_env: dict[str, str], settings: Any
) -> None:
    # Matches plan "pro", with more conditions than any worker accepts.
    oversized = {"any": [{"plan": "pro"}, *({"plan": f"p{i}"} for i in range(300))]}
    streams = [await open_stream(w, "channel=alpha&plan=pro") for w in workers]
    env = {**redis_env, "DJANGO_DB_PATH": settings.DATABASES["default"]["NAME"]}
    try:
        await asyncio.to_thread(publish_unchecked_from_process, env, "alpha", "big", oversized)
        await asyncio.to_thread(
            publish_unchecked_from_process, env, "alpha", "typo", {"plan__nee": "free"}
        )
        fine = await publish(workers[0], {"channel": "alpha", "data": "fine"})
        for stream, worker in zip(streams, workers, strict=True):
            event = await next_data(stream)
            assert (event.data, event.id) == ("fine", fine.json()["id"])
            assert worker.log.read_text().count("dropped an event") == 2
    finally:
        for stream in streams:
            await stream.close()
