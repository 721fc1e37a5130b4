"""Graceful shutdown, connection lifetime, stuck writes and the per-user cap, on real servers."""

from __future__ import annotations

import asyncio
import gc
import signal
import socket
import time
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from stream_app.testing import EventStream
from tests.conftest import Server, fetch_json

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TOKEN = {"Authorization": "Bearer test-token"}


async def publish(server: Server, channel: str, data: Any) -> str:
    async with httpx.AsyncClient(timeout=10) as client:
        response = await client.post(
            f"{server.url}/stream/publish/",
            json={"channel": channel, "data": data},
            headers=TOKEN,
        )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def until_ready(stream: EventStream) -> None:
    while (await stream.next_event()).event != "ready":
        pass


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_sigterm_tells_clients_to_come_back_later_and_exits(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = server_factory(kind)
    stream = await EventStream(f"{server.url}/sse/?channel=news").open()
    await until_ready(stream)
    started = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    try:
        await stream.read_all(timeout=10)
    finally:
        await stream.close()
    # The jittered retry: SHUTDOWN_RETRY (1000 ms) plus up to as much again.
    assert stream.decoder.retry is not None
    assert 1000 <= stream.decoder.retry <= 2000
    await asyncio.to_thread(server.proc.wait, 15)
    assert time.monotonic() - started < 15
    assert server.proc.returncode is not None


async def test_sigterm_clients_resume_on_another_worker_without_loss(
    server_factory: Callable[..., Server], redis_env: dict[str, str]
) -> None:
    a = server_factory("uvicorn", redis_env)
    b = server_factory("daphne", redis_env)
    stream = await EventStream(f"{a.url}/sse/?channel=alpha").open()
    await until_ready(stream)
    first = await publish(b, "alpha", "first")
    assert (await stream.next_event()).id == first
    a.proc.send_signal(signal.SIGTERM)
    await stream.read_all(timeout=10)
    await stream.close()
    missed = [await publish(b, "alpha", i) for i in range(5)]
    resumed = await EventStream(
        f"{b.url}/sse/?channel=alpha", headers={"Last-Event-ID": stream.decoder.last_event_id}
    ).open()
    try:
        events = [await resumed.next_event() for _ in range(6)]
        assert [e.id for e in events[:5]] == missed
        assert events[5].event == "ready"
    finally:
        await resumed.close()


async def test_max_lifetime_ends_streams_with_jitter(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory(
        "uvicorn", {"STREAM_APP_JSON": '{"MAX_LIFETIME": 1.0}', "STREAM_KEEP_ALIVE": "0.2"}
    )
    durations = []
    for _ in range(3):
        async with EventStream(f"{server.url}/sse/?channel=news") as stream:
            started = time.monotonic()
            await stream.read_all(timeout=5)
        durations.append(time.monotonic() - started)
    assert all(0.75 <= d <= 1.4 for d in durations), durations
    state = await fetch_json(f"{server.url}/t/state/")
    assert state["live"] == 0


async def test_write_timeout_drops_a_stuck_peer(
    server_factory: Callable[..., Server],
) -> None:
    server = server_factory("uvicorn", {"STREAM_APP_JSON": '{"WRITE_TIMEOUT": 1.0}'})
    await fetch_json(f"{server.url}/t/reset/")
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(b"GET /t/idle/?keep_alive=none HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    try:
        await asyncio.sleep(0.3)
        # Fill the peer's buffers through the held channel: the writer blocks, then times out.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            async with httpx.AsyncClient(timeout=10) as client:
                await client.get(f"{server.url}/t/flood-held/?size=200000&n=20")
            state = await fetch_json(f"{server.url}/t/state/")
            if "write_timeout" in state["closed"]:
                break
            await asyncio.sleep(0.5)
        assert "write_timeout" in state["closed"]
        assert state["held"] == 0
    finally:
        stuck.close()


async def test_per_user_connection_cap(server_factory: Callable[..., Server]) -> None:
    user = await User.objects.acreate(username="capped")
    client = Client()
    await asyncio.to_thread(client.force_login, user)
    cookies = {"sessionid": client.cookies["sessionid"].value}
    server = server_factory("uvicorn", {"STREAM_APP_JSON": '{"MAX_CONNECTIONS_PER_USER": 2}'})
    http = httpx.AsyncClient(cookies=cookies, timeout=10)
    streams = [
        await EventStream(f"{server.url}/sse/?channel=news", client=http).open() for _ in range(2)
    ]
    try:
        assert [s.status_code for s in streams] == [200, 200]
        response = await http.get(f"{server.url}/sse/?channel=news")
        assert response.status_code == 429
        assert response.json()["error"] == "too_many_connections"
        anonymous = await EventStream(f"{server.url}/sse/?channel=news").open()
        assert anonymous.status_code == 200
        await anonymous.close()
        await streams.pop().close()
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            async with http.stream("GET", f"{server.url}/sse/?channel=news") as again:
                if again.status_code == 200:
                    break
            await asyncio.sleep(0.05)
        assert again.status_code == 200
    finally:
        for stream in streams:
            await stream.close()
        await http.aclose()


@pytest.mark.parametrize(
    ("kind", "options", "threshold", "frozen"),
    [
        ("uvicorn", "{}", [50_000, 5, 5], True),
        ("daphne", "{}", [50_000, 5, 5], True),
        # Left alone: the interpreter's own default (700 before Python 3.13, 2000 since).
        ("uvicorn", '{"GC_THRESHOLD": null}', list(gc.get_threshold()), False),
    ],
)
async def test_gc_is_tuned_at_startup(
    server_factory: Callable[..., Server],
    kind: str,
    options: str,
    threshold: list[int],
    frozen: bool,
) -> None:
    server = server_factory(kind, {"STREAM_APP_JSON": options})
    state = await fetch_json(f"{server.url}/t/state/")
    assert state["gc_threshold"] == threshold
    assert (state["gc_frozen"] > 10_000) is frozen
