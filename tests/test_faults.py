"""Faults a worker must shrug off: garbage requests, connection floods, killed peers."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Callable

import httpx
import pytest
from django.contrib.auth.models import User
from django.test import Client

from stream_app.testing import EventStream
from tests.conftest import RedisServer, Server, rss_kb

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TOKEN = {"Authorization": "Bearer test-token"}

# Each malformed request and what each server answers it: an HTTP status line, or b"" where
# the server drops the connection without a word.
GARBAGE = {
    "not http": (b"GARBAGE\r\n\r\n", {"uvicorn": b"400", "daphne": b"400"}),
    "header without colon": (
        b"GET /sse/?channel=news HTTP/1.1\r\nHost 127.0.0.1\r\n\r\n",
        {"uvicorn": b"400", "daphne": b"400"},
    ),
    "control bytes in a header": (
        b"GET /sse/?channel=news HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Last-Event-ID: \xff\xfe\x00\r\n\r\n",
        {"uvicorn": b"400", "daphne": b"400"},
    ),
    # uvicorn accepts a 70 KB header and serves the stream; twisted drops the connection.
    "huge header": (
        b"GET /sse/?channel=news HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Big: "
        + b"a" * 70000
        + b"\r\n\r\n",
        {"uvicorn": b"200", "daphne": b""},
    ),
    "tls handshake": (
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)),
        {"uvicorn": b"400", "daphne": b""},
    ),
    # Parsed by the server, refused by stream_app with its JSON error.
    "bad percent escape": (
        b"GET /sse/?channel=%ZZ%00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        {"uvicorn": b"400", "daphne": b"400"},
    ),
}


def send_garbage(port: int, payload: bytes) -> bytes:
    """Send one malformed request; what comes back until the server closes or goes quiet."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=3) as sock:
        try:
            sock.sendall(payload)
            while chunk := sock.recv(4096):
                answer += chunk
                sock.settimeout(0.5)
        except OSError:
            # Reset by the server, or quiet (an event stream stays open): what came is the answer.
            pass
    return answer


def status_of(answer: bytes) -> bytes:
    """The status code of an HTTP/1.1 answer, b"" for none."""
    return answer[len(b"HTTP/1.1 ") :][:3] if answer.startswith(b"HTTP/1.1 ") else answer[:3]


@pytest.mark.parametrize("kind", ["uvicorn", "daphne"])
async def test_garbage_requests_do_not_disturb_other_streams(
    server_factory: Callable[..., Server], kind: str
) -> None:
    server = server_factory(kind)
    stream = await EventStream(f"{server.url}/sse/?channel=news").open()
    try:
        while (await stream.next_event()).event != "ready":
            pass
        for name, (payload, expected) in GARBAGE.items():
            answer = await asyncio.to_thread(send_garbage, server.port, payload)
            assert status_of(answer) == expected[kind], (name, answer[:300])
            if expected[kind] == b"200":
                assert b"text/event-stream" in answer, (name, answer[:300])
        bad_escape = await asyncio.to_thread(
            send_garbage, server.port, GARBAGE["bad percent escape"][0]
        )
        assert b'"error": "invalid_channel"' in bad_escape, bad_escape
        async with httpx.AsyncClient(timeout=10) as client:
            response = await client.post(
                f"{server.url}/stream/publish/",
                json={"channel": "news", "data": "still here"},
                headers=TOKEN,
            )
        event = await stream.next_event(timeout=5)
        assert (event.data, event.id) == ("still here", response.json()["id"])
        assert server.proc.poll() is None
    finally:
        await stream.close()


async def test_connection_flood_above_the_cap_is_refused_and_bounded(
    server_factory: Callable[..., Server],
) -> None:
    user = await User.objects.acreate(username="flooder")
    client = Client()
    await asyncio.to_thread(client.force_login, user)
    cookie = client.cookies["sessionid"].value
    server = server_factory("uvicorn", {"STREAM_APP_JSON": '{"MAX_CONNECTIONS_PER_USER": 3}'})
    bystander = await EventStream(f"{server.url}/sse/?channel=news").open()
    while (await bystander.next_event()).event != "ready":
        pass
    before = rss_kb(server.proc.pid)
    limits = httpx.Limits(max_connections=300, max_keepalive_connections=0)
    flood = httpx.AsyncClient(cookies={"sessionid": cookie}, timeout=20, limits=limits)
    opened: list[httpx.Response] = []

    async def attempt() -> int:
        request = flood.build_request("GET", f"{server.url}/sse/?channel=news")
        response = await flood.send(request, stream=True)
        if response.status_code == 200:
            opened.append(response)
        else:
            await response.aread()
            await response.aclose()
        return response.status_code

    try:
        sizes = []
        for _ in range(8):
            started = time.monotonic()
            statuses = await asyncio.gather(*(attempt() for _ in range(300)))
            assert statuses.count(200) == (0 if sizes else 3)
            assert statuses.count(429) == 300 - statuses.count(200)
            assert time.monotonic() - started < 20
            sizes.append(rss_kb(server.proc.pid))
        async with httpx.AsyncClient(timeout=10) as http:
            response = await http.post(
                f"{server.url}/stream/publish/",
                json={"channel": "news", "data": "after the flood"},
                headers=TOKEN,
            )
        event = await bystander.next_event(timeout=5)
        assert (event.data, event.id) == ("after the flood", response.json()["id"])
        # Bounded: memory climbs while the garbage of refused requests waits for the older
        # generations' collections (GC_THRESHOLD), then levels off; a leak would keep adding
        # ~8 MB per flood of 300.
        assert max(sizes[-4:]) - min(sizes[-4:]) < 20_000, (before, sizes)
    finally:
        for response in opened:
            await response.aclose()
        await flood.aclose()
        await bystander.close()


async def test_redis_restart_during_a_burst_loses_nothing_that_was_published(
    server_factory: Callable[..., Server], redis_env: dict[str, str], redis_server: RedisServer
) -> None:
    env = {**redis_env, "STREAM_KEEP_ALIVE": "0.3"}
    workers = [server_factory("uvicorn", env), server_factory("daphne", env)]
    streams = [await EventStream(f"{w.url}/sse/?channel=alpha").open() for w in workers]
    for stream in streams:
        while (await stream.next_event()).event != "ready":
            pass
    published: list[str] = []
    refused = 0

    async def burst() -> None:
        nonlocal refused
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(300):
                response = await http.post(
                    f"{workers[i % 2].url}/stream/publish/",
                    json={"channel": "alpha", "data": i},
                    headers=TOKEN,
                )
                if response.status_code == 201:
                    published.append(response.json()["id"])
                else:
                    assert response.status_code == 503
                    refused += 1
                await asyncio.sleep(0.01)

    async def restart() -> None:
        await asyncio.sleep(0.8)
        await asyncio.to_thread(redis_server.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(redis_server.start)

    try:
        await asyncio.gather(burst(), restart())
        assert refused > 0
        for stream in streams:
            received: list[str] = []
            keep_alives = 0
            deadline = time.monotonic() + 20
            while len(received) < len(published) and time.monotonic() < deadline:
                chunk = await stream.read_chunk(timeout=5)
                keep_alives += chunk.count(b":\n\n")
                received.extend(e.id or "" for e in stream.decoder.feed(chunk))
            assert received == published
            assert keep_alives >= 2
        assert all(w.proc.poll() is None for w in workers)
    finally:
        for stream in streams:
            await stream.close()
