"""Redis Sentinel with real processes: a primary, a replica and three sentinels on loopback.

The primary is killed (-9) during a burst of publishes, after its replication link was cut
half-open (``tests.tcp_proxy``), so the replica that takes over lacks the last events. The
worker (real uvicorn, ``redis+sentinel://`` URL) follows the new primary; what was lost shows
as ``reset``, live and on resume with ``Last-Event-ID``, never as a silent gap.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from django.test import override_settings

from stream_app.backends.redis.connection import target
from stream_app.protocol import Event
from stream_app.testing import EventStream
from tests.conftest import Server, free_port
from tests.tcp_proxy import FreezableProxy

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]
TOKEN = {"Authorization": "Bearer test-token"}
SERVICE = "streams"
# Sentinel's own timings (configured below): the primary is "down" after DOWN_AFTER_MS of
# silence; the election and promotion take a second or two more.
DOWN_AFTER_MS = 1000
#: Documented bound (README, Sentinel): a worker publishes to the new primary within
#: down-after-milliseconds + election and promotion (~3 s) + the listener's backoff (5 s).
FOLLOW_BOUND = DOWN_AFTER_MS / 1000 + 3 + 5


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    assert binary is not None, "redis-server is not installed"
    return binary


def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    pytest.fail(f"timed out waiting for {what}")


@dataclass
class Deployment:
    """The processes of one test; everything is killed at teardown."""

    folder: Path
    primary: int = field(default_factory=free_port)
    replica: int = field(default_factory=free_port)
    sentinels: list[int] = field(default_factory=lambda: [free_port() for _ in range(3)])
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def spawn(self, name: str, *args: str) -> None:
        log = self.folder / f"{name}.log"
        self.procs[name] = subprocess.Popen(
            [redis_binary(), *args, "--logfile", str(log)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def node(self, port: int) -> redis.Redis:
        return redis.Redis(port=port, socket_timeout=2, decode_responses=True)

    def start_sentinels(self) -> None:
        for i, port in enumerate(self.sentinels):
            config = self.folder / f"sentinel{i}.conf"
            config.write_text(
                f"port {port}\nbind 127.0.0.1\ndir {self.folder}\n"
                f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary} 2\n"
                f"sentinel down-after-milliseconds {SERVICE} {DOWN_AFTER_MS}\n"
                # Long: a sentinel "fixes" a replica that points elsewhere (at our proxy)
                # only after this long, and the one failover here succeeds at once.
                f"sentinel failover-timeout {SERVICE} 60000\n"
                f"sentinel parallel-syncs {SERVICE} 1\n"
            )
            self.spawn(f"sentinel{i}", str(config), "--sentinel")

    def sentinel_view(self, port: int) -> dict[str, Any]:
        with self.node(port) as client:
            found: dict[str, Any] = client.sentinel_master(SERVICE)
            return found

    def stop(self) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)

    @property
    def url(self) -> str:
        hosts = ",".join(f"127.0.0.1:{port}" for port in self.sentinels)
        return f"redis+sentinel://{hosts}/{SERVICE}/0"


@pytest.fixture
async def deployment(tmp_path: Path) -> AsyncIterator[tuple[Deployment, FreezableProxy]]:
    found = Deployment(tmp_path)
    # --dir: a full resync writes an RDB file even with --save "", and it belongs to the test.
    common = ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(tmp_path)]
    found.spawn("primary", "--port", str(found.primary), *common)
    await asyncio.to_thread(wait_for, lambda: found.node(found.primary).ping(), 10, "primary")
    # The replica reaches the primary through a proxy, so that the test can cut replication.
    link = await FreezableProxy(found.primary).start()
    found.spawn(
        "replica", "--port", str(found.replica), *common,
        "--replicaof", "127.0.0.1", str(link.port),
    )  # fmt: skip

    def replicating() -> bool:
        info = found.node(found.replica).info("replication")
        return bool(info.get("master_link_status") == "up")

    try:
        await asyncio.to_thread(wait_for, replicating, 15, "the replica")
        found.start_sentinels()

        def sentinels_agree() -> bool:
            views = [found.sentinel_view(port) for port in found.sentinels]
            return all(
                v["num-slaves"] >= 1
                and v["num-other-sentinels"] == 2
                and v["port"] == found.primary
                for v in views
            )

        await asyncio.to_thread(wait_for, sentinels_agree, 30, "three sentinels and a replica")
        yield found, link
    finally:
        found.stop()
        await link.close()


async def publish(client: httpx.AsyncClient, worker: Server, data: Any) -> httpx.Response:
    return await client.post(
        f"{worker.url}/stream/publish/", json={"channel": "alpha", "data": data}, headers=TOKEN
    )


async def events_until(stream: EventStream, done: Callable[[list[Event]], bool]) -> list[Event]:
    got: list[Event] = []
    deadline = time.monotonic() + 30
    while not done(got) and time.monotonic() < deadline:
        got.append(await stream.next_event(deadline - time.monotonic()))
    return got


def test_redis_sentinel_url_and_settings_name_the_same_target() -> None:
    url = "redis+sentinel://:pw@127.0.0.1:26379,[::1]:26380/streams/2?ssl_ca_certs=/ca.pem"
    with override_settings(STREAM_APP={"REDIS_URL": url}):
        found = target()
    assert (found.sentinels, found.service, found.db) == (
        [("127.0.0.1", 26379), ("::1", 26380)],
        "streams",
        2,
    )
    assert found.options == {"password": "pw", "ssl_ca_certs": "/ca.pem"}
    assert "pw" not in found.describe()
    settings = {"REDIS_SENTINELS": [["127.0.0.1", 26379]], "REDIS_SENTINEL_SERVICE": "streams"}
    with override_settings(STREAM_APP=settings):
        found = target()
    assert (found.sentinels, found.service, found.db) == ([("127.0.0.1", 26379)], "streams", 0)


async def test_redis_sentinel_failover_is_followed_and_losses_show_as_reset(
    server_factory: Callable[..., Server],
    deployment: tuple[Deployment, FreezableProxy],
    settings: Any,
) -> None:
    nodes, link = deployment
    env = {
        "STREAM_BACKEND": "redis",
        "REDIS_URL": nodes.url,
        "STREAM_KEY_PREFIX": f"sen{time.monotonic_ns()}",
        "STREAM_KEEP_ALIVE": "0.3",
    }
    worker = server_factory("uvicorn", env)
    live = await EventStream(f"{worker.url}/sse/?channel=alpha").open()
    resumed: list[EventStream] = []
    try:
        while (await live.next_event()).event != "ready":
            pass
        async with httpx.AsyncClient(timeout=10) as client:
            replicated = [(await publish(client, worker, i)).json()["id"] for i in range(10)]
            await asyncio.to_thread(
                wait_for,
                lambda: nodes.node(nodes.replica).xlen(f"{env['STREAM_KEY_PREFIX']}:s:alpha") == 10,
                10,
                "replication",
            )
            link.freeze()
            unreplicated = [(await publish(client, worker, f"u{i}")).json()["id"] for i in range(5)]
            nodes.procs["primary"].kill()
            killed = time.monotonic()
            after: list[str] = []
            while len(after) < 5 and time.monotonic() - killed < FOLLOW_BOUND + 10:
                response = await publish(client, worker, f"after {len(after)}")
                if response.status_code == 201:
                    after.append(response.json()["id"])
                else:
                    assert response.status_code == 503, response.text
                    await asyncio.sleep(0.2)
            assert len(after) == 5
            assert time.monotonic() - killed < FOLLOW_BOUND + 5
        view = await asyncio.to_thread(nodes.sentinel_view, nodes.sentinels[0])
        assert view["port"] == nodes.replica

        # Live: everything the old primary delivered, then a reset (it cannot be replayed by
        # anyone any more, and later events may have been lost), then the new primary's.
        got = await events_until(live, lambda g: bool(g) and g[-1].id == after[-1])
        ids = [e.id for e in got if e.event != "reset"]
        assert ids == replicated + unreplicated + after
        resets = [e for e in got if e.event == "reset"]
        # One for the stream, though it is on several channels (alpha and the defaults).
        assert len({"alpha", *settings.STREAM_APP["DEFAULT_CHANNELS"]}) > 1
        assert [json.loads(e.data or "") for e in resets] == [
            {"reason": "history_lost", "last_event_id": unreplicated[-1]}
        ]
        assert got[len(replicated + unreplicated)].event == "reset"

        # Resuming from before the hole, or inside it: a reset, then what still exists.
        for position, expected in (
            (replicated[4], replicated[5:] + after),
            (unreplicated[2], after),
        ):
            stream = await EventStream(
                f"{worker.url}/sse/?channel=alpha", headers={"Last-Event-ID": position}
            ).open()
            resumed.append(stream)
            events = await events_until(stream, lambda g: bool(g) and g[-1].id == after[-1])
            kinds = [e.event for e in events if e.event not in ("ready",)]
            assert kinds[0] == "reset"
            assert [e.id for e in events if e.event not in ("reset", "ready")] == expected
        # From after the hole: an exact replay.
        stream = await EventStream(
            f"{worker.url}/sse/?channel=alpha", headers={"Last-Event-ID": after[0]}
        ).open()
        resumed.append(stream)
        events = await events_until(stream, lambda g: bool(g) and g[-1].id == after[-1])
        assert [e.event for e in events if e.event == "reset"] == []
        assert [e.id for e in events if e.event != "ready"] == after[1:]
    finally:
        await live.close()
        for stream in resumed:
            await stream.close()
