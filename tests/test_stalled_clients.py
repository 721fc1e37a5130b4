"""Every server the project ships drops a client that stops reading, with memory bounded.

The servers shipped: ``scripts/demo`` (run for real), the Dockerfile's ``CMD`` and the app
services of docker-compose.yml (their commands run as tests/test_deploy.py runs them). Each
serves the test project with a 2 s ``WRITE_TIMEOUT``. Five raw sockets with a tiny receive
buffer subscribe to a channel and never read; a publisher broadcasts 256 KB events. The server
must hold no connection to any of them ``WRITE_TIMEOUT`` (plus a keep-alive tick and slack)
after the broadcasts, and its resident memory must stay bounded: below a copy of the burst per
stalled client while it waits, and not growing with a second burst once they are gone.

daphne's writes never wait (Twisted buffers all of it), so under daphne none of this happens:
that is why no shipped command runs it (it stays the ``runserver`` helper).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from django.conf import settings

from tests.conftest import Server, rss_kb
from tests.test_deploy import app_services, compose_file, dockerfile_command, start_worker
from tests.test_scripts import start_demo

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

WRITE_TIMEOUT = 2.0
KEEP_ALIVE = 1.0  # the heartbeat that checks write timeouts ticks every KEEP_ALIVE / 4
STALLED = 5
EVENT = "x" * 256_000
BURST = 40  # 10 MB: far more than the socket buffers of the stalled clients
SERVER_ENV = {
    "STREAM_KEEP_ALIVE": str(KEEP_ALIVE),
    # A short history, so that what the server keeps is what it buffers for clients.
    "STREAM_APP_JSON": json.dumps({"WRITE_TIMEOUT": WRITE_TIMEOUT, "HISTORY_SIZE": 5}),
}


def held_peer_ports(pid: int, port: int) -> set[int]:
    """The client ports of the TCP connections that process ``pid`` holds open on ``port``
    (from /proc: the process's socket descriptors, matched to the kernel's TCP table)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    ports = set()
    for table in ("tcp", "tcp6"):
        path = Path(f"/proc/{pid}/net/{table}")
        for line in path.read_text().splitlines()[1:] if path.exists() else []:
            fields = line.split()
            local, remote, inode = fields[1], fields[2], fields[9]
            if inode in inodes and int(local.rsplit(":", 1)[1], 16) == port:
                ports.add(int(remote.rsplit(":", 1)[1], 16))
    return ports


def stalled_client(port: int) -> socket.socket:
    """A client that subscribes to ``news`` and never reads a byte."""
    sock = socket.socket()
    # Set before connecting, so that the advertised window is small from the start.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(
        b"GET /sse/?channel=news HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n"
    )
    return sock


async def open_sessions(client: httpx.AsyncClient) -> int:
    """Streams open on the server (its health endpoint counts them)."""
    return int((await client.get("/stream/health/")).json()["sessions"])


async def publish_burst(client: httpx.AsyncClient) -> None:
    """Broadcast ``BURST`` large events to ``news``, as fast as the server takes them."""
    token = settings.STREAM_APP["PUBLISH_TOKEN"]
    for _ in range(BURST):
        response = await client.post(
            "/stream/publish/",
            json={"channel": "news", "data": EVENT},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 201, response.text


@pytest.fixture(params=["demo", "dockerfile", "compose"])
def shipped_server(request: pytest.FixtureRequest, django_db_setup: None) -> Iterator[Server]:
    """The server each shipped entry point runs, on the test project and database."""
    if request.param == "demo":
        server = start_demo(SERVER_ENV)
    elif request.param == "dockerfile":
        server = start_worker(dockerfile_command(), SERVER_ENV)
    else:
        service = next(iter(app_services(compose_file()).values()))
        server = start_worker(service["command"], SERVER_ENV)
    yield server
    server.stop()


async def test_shipped_server_drops_clients_that_stop_reading(shipped_server: Server) -> None:
    server = shipped_server
    pid = server.proc.pid
    async with httpx.AsyncClient(base_url=server.url, timeout=10) as client:
        stalled = [stalled_client(server.port) for _ in range(STALLED)]
        try:
            ports = {sock.getsockname()[1] for sock in stalled}
            deadline = time.monotonic() + 10
            while await open_sessions(client) < STALLED:
                assert time.monotonic() < deadline, "the stalled clients never subscribed"
                await asyncio.sleep(0.05)
            assert held_peer_ports(pid, server.port) >= ports
            before = rss_kb(pid)

            await publish_burst(client)
            published = time.monotonic()
            limit = WRITE_TIMEOUT + KEEP_ALIVE / 4 + 5  # slack for a busy machine
            while held := held_peer_ports(pid, server.port) & ports:
                assert time.monotonic() - published < limit, (
                    f"{server.kind} still holds {len(held)} of {STALLED} stalled clients "
                    f"{time.monotonic() - published:.1f}s after the broadcasts "
                    f"(WRITE_TIMEOUT {WRITE_TIMEOUT}s): RSS +{rss_kb(pid) - before} KB"
                )
                await asyncio.sleep(0.1)
            assert await open_sessions(client) == 0
            # Publishing as much again keeps nothing: nobody is left to buffer it for.
            dropped = rss_kb(pid)
            await publish_burst(client)
            after = rss_kb(pid)
        finally:
            for sock in stalled:
                sock.close()
    burst_kb = BURST * len(EVENT) // 1024
    # Until the timeout the server holds what it queued for them (the events are shared, one
    # chunk per connection is not): less than a copy of the burst per stalled client.
    assert after - before < STALLED * burst_kb, (before, dropped, after)
    # Once they are gone, a burst passes through: what grows is allocator slack.
    assert after - dropped < burst_kb // 2, (before, dropped, after)
