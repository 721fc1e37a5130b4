"""What the phases share: the phases' shapes, a run, its context (servers, clients) and the
CPU meter."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.clients import App, Clients, Profile
from bench.loadgen import http_json
from bench.procs import Proc, busy_seconds, cpu_seconds
from bench.profiling import Profiler

__all__ = [
    "Churn",
    "Context",
    "Fanout",
    "Meter",
    "Phase",
    "Run",
    "Storm",
    "Tokens",
    "ms",
    "percentile",
]


@dataclass(frozen=True)
class Fanout:
    """``clients`` idle listeners, then ``broadcasts`` events at ``rate`` per second."""

    clients: int
    rate: float
    broadcasts: int


@dataclass(frozen=True)
class Tokens:
    """``streams`` concurrent streams of ``events`` tiny events each, ``repeat`` rounds."""

    streams: int
    events: int
    repeat: int = 3


@dataclass(frozen=True)
class Churn:
    """Connect, wait for the stream to start, disconnect: ``concurrency`` loops, two rounds."""

    seconds: float
    concurrency: int


@dataclass(frozen=True)
class Storm:
    """The reconnect storm: ``clients`` listeners on worker 1 drop, ``missed`` events are
    published, then all reconnect within ``spread`` seconds with ``Last-Event-ID`` (to the
    last worker: the other one when there are two)."""

    clients: int
    missed: int = 100
    spread: float = 1.0


Phase = Fanout | Tokens | Churn | Storm


@dataclass(frozen=True)
class Run:
    """One server configuration in fresh processes and the phases measured against it."""

    server: str
    app: str
    phases: tuple[Phase, ...]
    backend: str = "memory"
    workers: int = 1
    profile: bool = False
    project: str = "realistic"


@dataclass
class Context:
    """What a phase needs: the run, its servers and where to write files."""

    run: Run
    app: App
    profile: Profile
    clients: Clients
    servers: list[Proc]
    out: Path
    redis: Proc | None = None
    profiles: dict[str, Any] = field(default_factory=dict)

    def listen(self, port: int, index: int, last_event_id: str | None = None) -> bytes:
        """Client ``index``'s request for a fan-out stream (its own channel too, if logged in)."""
        return self.clients.request(
            self.app.listen, port, index, last_event_id, user=self.app.per_user
        )

    @property
    def ports(self) -> list[int]:
        """The servers' ports (clients are spread over them)."""
        return [server.port for server in self.servers]

    @property
    def pids(self) -> list[int]:
        """Every server process (workers included)."""
        return [pid for server in self.servers for pid in server.pids]

    async def open_streams(self) -> int:
        """Streams open on all servers, as the servers count them."""
        counts = await asyncio.gather(
            *(http_json(port, "GET", self.app.stats) for port in self.ports)
        )
        return sum(int(count["open"]) for count in counts)

    async def wait_open(self, target: int, timeout: float) -> tuple[int, float]:
        """Poll until ``target`` streams are open; returns (open, seconds waited)."""
        start = time.perf_counter()
        while True:
            count = await self.open_streams()
            waited = time.perf_counter() - start
            if count == target or waited > timeout:
                return count, waited
            await asyncio.sleep(0.05)

    @contextlib.asynccontextmanager
    async def profiled(self, label: str, server: int = 0) -> AsyncIterator[None]:
        """Record server ``server`` (the first) with py-spy during the block when the run asks
        for it."""
        if not self.run.profile:
            yield
            return
        name = f"{self.run.project}-{self.run.server}-{self.run.app}-{self.run.backend}"
        path = self.out / f"profile-{name}-{label}.txt"
        profiler = Profiler(self.servers[server].pids[0], path)
        try:
            yield
        finally:
            self.profiles[label] = profiler.stop()


class Meter:
    """CPU time over one or more windows: the servers', Redis', and other processes' on our cores.

    Other processes on the two cores (anyone else's work on a shared machine) delay the servers
    and the load generator: ``others_pct`` says how much of a core they took meanwhile.
    """

    def __init__(self, ctx: Context) -> None:
        self.servers = ctx.pids
        self.redis = ctx.redis.pids if ctx.redis else []
        self.own = [*self.servers, *self.redis, os.getpid()]
        self.server_s = self.redis_s = self.others_s = self.wall_s = 0.0

    @contextlib.contextmanager
    def window(self) -> Iterator[None]:
        """Add the CPU spent during the block."""
        server, redis, own = (cpu_seconds(p) for p in (self.servers, self.redis, self.own))
        busy, start = busy_seconds(), time.perf_counter()
        try:
            yield
        finally:
            self.server_s += cpu_seconds(self.servers) - server
            self.redis_s += cpu_seconds(self.redis) - redis
            self.others_s += busy_seconds() - busy - (cpu_seconds(self.own) - own)
            self.wall_s += time.perf_counter() - start

    @property
    def others_pct(self) -> float:
        """Other processes' CPU on our two cores, in % of one core."""
        return 100 * max(0.0, self.others_s) / self.wall_s if self.wall_s else 0.0


def ms(seconds: float) -> float:
    """Seconds to milliseconds."""
    return seconds * 1000.0


def percentile(ordered: list[float], fraction: float) -> float:
    """The ``fraction`` percentile of sorted values (nearest rank, no interpolation)."""
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
