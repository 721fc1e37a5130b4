"""The reconnect storm: N clients drop, K events are published, all come back at once.

1. ``clients`` listeners connect to worker 1 and idle (their memory is the *idle-connection
   memory*); one event (``i = 0``) is published and every client reads it and its id.
2. They all close (FIN); ``missed`` events (``i = 1..K``) are published while they are away.
3. They reconnect within ``spread`` seconds (client ``j`` at ``j / N * spread``), each with
   ``Last-Event-ID`` = the id of ``i = 0``, to the last worker (the other one with two
   workers, the same one with one). Half-way through, one publish on another channel is timed
   (*publish during the storm*, a request to the storming worker). Once every reconnect has its
   response head, the live event (``i = K + 1``) is published there (also timed).
4. A client is *caught up* once it has read ``i = 1..K+1`` (in order, each once); the storm
   takes from the first reconnect until the last client is caught up (bounded wait).

Every client checks the ``i`` of each event against the one it expects next: a repeat counts
as a duplicate, a jump as missing events (and out of order). ``reset`` events are counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import Counter
from typing import Any

from bench.context import Context, Meter, Storm, ms
from bench.loadgen import HOST, EventsConn, http_json, open_many
from bench.procs import rss_kb

__all__ = ["StormConn", "storm"]

# One stamped bench event: its id and its index (the payload is {"t": <stamp>, "i": <index>}).
_EVENT = re.compile(rb'id: ([0-9]+-[0-9]+)\ndata: \{"t":[0-9.e+-]+,"i":([0-9]+)')
_RESET = b"event: reset\n"
# History commands of the Redis backend (INFO commandstats names).
_REDIS_HISTORY = ("xrange", "xrevrange", "xread")


class Tracker:
    """What all the clients of one wave have read; ``done`` once every one has its last event."""

    def __init__(self, clients: int) -> None:
        self.waiting = clients
        self.done = asyncio.Event()
        self.t_last = 0.0
        if clients == 0:
            self.done.set()

    def finished(self, now: float) -> None:
        """One more client has read its last event."""
        self.waiting -= 1
        self.t_last = max(self.t_last, now)
        if self.waiting <= 0:
            self.done.set()


class StormConn(EventsConn):
    """A listener that expects events ``i = first..last``, in order, each once."""

    def __init__(self, request: bytes, tracker: Tracker, first: int, last: int) -> None:
        super().__init__(request)
        self.tracker = tracker
        self.expect = first
        self.last = last
        self.last_id = ""
        self.got = self.duplicates = self.missing = self.resets = 0
        self.t_done: float | None = None

    def events(self, buffer: bytes, end: int, now: float) -> None:
        self.resets += buffer.count(_RESET, 0, end)
        for match in _EVENT.finditer(buffer, 0, end):
            index = int(match[2])
            if index < self.expect:
                self.duplicates += 1
                continue
            self.missing += index - self.expect
            self.expect = index + 1
            self.got += 1
            self.last_id = match[1].decode()
        if self.t_done is None and self.expect > self.last:
            self.t_done = now
            self.tracker.finished(now)

    @property
    def in_order(self) -> bool:
        """Every event once, none missing, up to the last one."""
        return self.t_done is not None and not (self.duplicates or self.missing)


async def _stats(ctx: Context) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(http_json(p, "GET", ctx.app.stats) for p in ctx.ports)))


def _sum(stats: list[dict[str, Any]], key: str) -> int:
    return sum(int(s.get(key, 0)) for s in stats)


def _reads(stats: list[dict[str, Any]]) -> Counter[str]:
    total: Counter[str] = Counter()
    for one in stats:
        total.update(one.get("history_reads", {}))
    return total


async def _redis_info(port: int, section: str) -> str:
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(HOST, port)
        try:
            writer.write(f"INFO {section}\r\n".encode())
            size = int((await reader.readline())[1:])
            return (await reader.readexactly(size + 2)).decode()
        finally:
            writer.close()


async def redis_calls(port: int) -> dict[str, int]:
    """Calls per command since the Redis server started (``INFO commandstats``)."""
    calls = {}
    for line in (await _redis_info(port, "commandstats")).splitlines():
        if line.startswith("cmdstat_"):
            name, _, fields = line[8:].partition(":")
            calls[name] = int(fields.split(",")[0].split("=")[1])
    return calls


async def redis_clients(port: int) -> int:
    """Connections the Redis server has now (``connected_clients``, this one included)."""
    for line in (await _redis_info(port, "clients")).splitlines():
        if line.startswith("connected_clients:"):
            return int(line.split(":")[1])
    return 0


async def _timed_publish(ctx: Context, port: int, query: str) -> float:
    start = time.perf_counter()
    await http_json(port, "POST", f"{ctx.app.publish}?{query}", timeout=60)
    return ms(time.perf_counter() - start)


def _log_sizes(ctx: Context) -> list[int]:
    return [server.log.stat().st_size if server.log.exists() else 0 for server in ctx.servers]


def _new_log_lines(ctx: Context, sizes: list[int]) -> list[str]:
    """Lines the servers logged since ``sizes`` (Django's default logging: warnings and up)."""
    lines: list[str] = []
    for server, size in zip(ctx.servers, sizes, strict=True):
        with server.log.open("rb") as log:
            log.seek(size)
            lines += [line for line in log.read().decode(errors="replace").splitlines() if line]
    return lines


async def _sample(ctx: Context, peak: dict[str, int], stop: asyncio.Event) -> None:
    """Keep the highest RSS of the servers (and connection count of Redis) every 50 ms."""
    while not stop.is_set():
        peak["rss"] = max(peak["rss"], rss_kb(ctx.pids))
        if ctx.redis:
            peak["redis"] = max(peak["redis"], await redis_clients(ctx.redis.port))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.05)


async def _reconnect(
    ctx: Context, phase: Storm, tracker: Tracker, after: str, conns: list[StormConn]
) -> int:
    """Every client back within ``phase.spread`` s with ``Last-Event-ID``; returns failures."""
    loop = asyncio.get_running_loop()
    port = ctx.ports[-1]
    start = loop.time()
    failed = 0

    async def one(index: int) -> None:
        nonlocal failed
        await asyncio.sleep(max(0.0, start + index * phase.spread / phase.clients - loop.time()))
        request = ctx.listen(port, index, after)
        try:
            async with asyncio.timeout(15):
                _, conn = await loop.create_connection(
                    lambda: StormConn(request, tracker, 1, phase.missed + 1), HOST, port
                )
                conns.append(conn)
                if await conn.head_done != 200:
                    failed += 1
        except (OSError, TimeoutError):
            failed += 1

    await asyncio.gather(*(one(i) for i in range(phase.clients)))
    return failed


async def _catch_up(
    ctx: Context, phase: Storm, tracker: Tracker, after: str, back: list[StormConn]
) -> tuple[float, int, float]:
    """Reconnect everyone, publish mid-storm and live, wait until all are caught up (bounded);
    returns (mid-storm publish ms, failed reconnects, live publish ms)."""
    limit = _limit(phase)
    storming = ctx.ports[-1]  # the worker the clients come back to
    reconnecting = asyncio.ensure_future(_reconnect(ctx, phase, tracker, after, back))
    await asyncio.sleep(phase.spread / 2)
    probe_ms = await _timed_publish(ctx, storming, "start=0&count=1&channel=bench-probe")
    failed = await asyncio.wait_for(reconnecting, limit)
    live_ms = await _timed_publish(ctx, storming, f"start={phase.missed + 1}&count=1")
    tracker.waiting -= failed
    if tracker.waiting <= 0:
        tracker.done.set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(tracker.done.wait(), limit)
    return probe_ms, failed, live_ms


def _limit(phase: Storm) -> float:
    """The longest wait of each step (seconds)."""
    return 30 + phase.clients / 100


async def storm(ctx: Context, phase: Storm) -> dict[str, Any]:
    """Run one storm (see the module docstring); the record of its figures."""
    # The missed events come from worker 1 (the timed publishes go to the stormed worker).
    pids, publisher = ctx.pids, ctx.ports[0]
    limit = _limit(phase)
    rss0 = rss_kb(pids)
    first_wave = Tracker(phase.clients)
    opened = await open_many(
        lambda port, index: StormConn(ctx.listen(port, index), first_wave, 0, 0),
        ctx.ports[:1],
        phase.clients,
        timeout=max(60.0, phase.clients / 100),
    )
    conns: list[StormConn] = opened.conns
    first_wave.waiting = len(conns)
    try:
        await ctx.wait_open(len(conns), timeout=30)
        await asyncio.sleep(0.5)
        rss_idle = rss_kb(pids)
        answer = await http_json(publisher, "POST", f"{ctx.app.publish}?start=0&count=1")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first_wave.done.wait(), limit)
        after = answer["last_id"]
        before_ids = Counter(conn.last_id for conn in conns)
    finally:
        for conn in conns:
            conn.close()
    await ctx.wait_open(0, timeout=30)
    await http_json(publisher, "POST", f"{ctx.app.publish}?start=1&count={phase.missed}", 60)
    rss_dropped = rss_kb(pids)
    stats0 = await _stats(ctx)
    calls0 = await redis_calls(ctx.redis.port) if ctx.redis else {}
    log_sizes = _log_sizes(ctx)
    tracker = Tracker(phase.clients)
    back: list[StormConn] = []
    peak, stop = {"rss": rss_dropped, "redis": 0}, asyncio.Event()
    sampler = asyncio.ensure_future(_sample(ctx, peak, stop))
    meter = Meter(ctx)
    probe_ms = live_ms = None
    failed = 0
    start = time.time()
    try:
        async with ctx.profiled(f"storm{phase.clients}", server=-1):
            with meter.window():
                probe_ms, failed, live_ms = await _catch_up(ctx, phase, tracker, after, back)
    finally:
        stop.set()
        await sampler
        stats1 = await _stats(ctx)
        calls1 = await redis_calls(ctx.redis.port) if ctx.redis else {}
        closed_early = sum(1 for c in back if c.closed.done() and c.t_done is None)
        for conn in back:
            conn.close()
    await ctx.wait_open(0, timeout=30)
    reads = _reads(stats1) - _reads(stats0)
    logged = _new_log_lines(ctx, log_sizes)
    events = phase.clients * (phase.missed + 1)
    idle = rss_idle - rss0
    record: dict[str, Any] = {
        "connected": len(conns),
        "connect_failed": opened.failed,
        "had_first_event": sum(1 for c in conns if c.t_done is not None),
        "distinct_last_ids": len(before_ids),
        "reconnect_failed": failed,
        "caught_up": sum(1 for c in back if c.in_order),
        "caught_up_s": (tracker.t_last - start) if tracker.done.is_set() else None,
        "delivered": sum(c.got for c in back),
        "delivered_fraction": sum(c.got for c in back) / events,
        "duplicates": sum(c.duplicates for c in back),
        "missing": sum(c.missing for c in back),
        "resets": sum(c.resets for c in back),
        "closed_early": closed_early,
        "slow_consumers": _sum(stats1, "slow_consumers") - _sum(stats0, "slow_consumers"),
        "server_resets": _sum(stats1, "replay_resets") - _sum(stats0, "replay_resets"),
        "probe_publish_ms": probe_ms,
        "live_publish_ms": live_ms,
        "history_reads": sum(reads.values()),
        "history_reads_channel": reads.get(ctx.profile.channel, 0),
        "history_channels": len(reads),
        "rss_idle_conn_kb": idle,
        "rss_peak_growth_kb": peak["rss"] - rss_dropped,
        "rss_peak_x_idle": (peak["rss"] - rss_dropped) / idle if idle > 0 else None,
        "cpu_s": meter.server_s,
        "others_cpu_pct": meter.others_pct,
        # What went wrong on the servers' side, if anything (a pool limit reached, errors).
        "log_lines": len(logged),
        "log_sample": logged[:5],
    }
    if ctx.redis:
        record["redis_history_calls"] = {
            name: calls1.get(name, 0) - calls0.get(name, 0) for name in _REDIS_HISTORY
        }
        record["redis_cpu_s"] = meter.redis_s
        # The sampler's own connection is not the servers'.
        record["redis_peak_clients"] = peak["redis"] - 1
    return record
