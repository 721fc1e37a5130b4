"""Runs: start the servers of one configuration, drive its phases, stop everything.

A run is one server configuration (project, server, app, backend, workers) in fresh processes
(and, in the realistic profile, a fresh copy of the seeded database), and a sequence of phases
measured against it: fan-out first (so that its memory baseline is a fresh process), then token
streams and churn; the reconnect storm (``bench.storm``) has runs of its own. Each phase
returns one flat record for the report.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.clients import PROFILES, Clients, Database, app_for
from bench.context import (
    Churn,
    Context,
    Fanout,
    Meter,
    Phase,
    Run,
    Storm,
    Tokens,
    ms,
    percentile,
)
from bench.loadgen import HOST, CountConn, FanoutConn, Tally, churn, http_json, open_many
from bench.procs import Proc, rss_kb, start_redis, start_server, threads
from bench.storm import storm

__all__ = ["execute"]


async def _fanout(ctx: Context, phase: Fanout) -> dict[str, Any]:
    pids = ctx.pids
    rss0 = rss_kb(pids)
    tally = Tally()

    def listener(port: int, index: int) -> FanoutConn:
        return FanoutConn(ctx.listen(port, index), tally)

    opened = await open_many(
        listener, ctx.ports, phase.clients, timeout=max(60.0, phase.clients / 100)
    )
    conns: list[FanoutConn] = opened.conns
    try:
        registered, _ = await ctx.wait_open(len(conns), timeout=30)
        # Let the servers finish what connecting started before reading memory.
        await asyncio.sleep(0.5)
        rss1 = rss_kb(pids)
        held_threads = threads(pids)
        meter = Meter(ctx)
        tally.expected = len(conns) * phase.broadcasts
        async with ctx.profiled("fanout"):
            with meter.window():
                await http_json(
                    ctx.ports[0],
                    "POST",
                    f"{ctx.app.broadcast}?k={phase.broadcasts}&rate={phase.rate}",
                )
                # Bounded: a lost event must not hang the benchmark.
                limit = phase.broadcasts / phase.rate + 5 + phase.clients / 1000
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(tally.done.wait(), limit)
    finally:
        for conn in conns:
            conn.close()
    left_open, _ = await ctx.wait_open(0, timeout=30)
    ordered = sorted(tally.latencies)
    delivered = len(ordered)
    record: dict[str, Any] = {
        "connected": len(conns),
        "registered": registered,
        "connect_failed": opened.failed,
        "connect_per_s": len(conns) / opened.seconds if opened.seconds else None,
        "expected": phase.clients * phase.broadcasts,
        "delivered": delivered,
        "delivered_fraction": delivered / (phase.clients * phase.broadcasts),
        "p50_ms": ms(percentile(ordered, 0.50)) if ordered else None,
        "p99_ms": ms(percentile(ordered, 0.99)) if ordered else None,
        "max_ms": ms(ordered[-1]) if ordered else None,
        "cpu_s": meter.server_s,
        "cpu_us_per_event": meter.server_s * 1e6 / delivered if delivered else None,
        "rss_idle_kb": rss0,
        "rss_kb": rss1,
        "rss_per_conn_kb": (rss1 - rss0) / len(conns) if conns else None,
        "threads": held_threads,
        "open_after_close": left_open,
        "others_cpu_pct": meter.others_pct,
    }
    if ctx.redis:
        record["redis_cpu_s"] = meter.redis_s
    return record


async def _token_round(ctx: Context, phase: Tokens) -> list[CountConn]:
    """One round: ``phase.streams`` streams at once, each read to its end (or the timeout)."""
    loop = asyncio.get_running_loop()
    port = ctx.ports[0]
    path = f"{ctx.app.tokens}?n={phase.events}"
    conns: list[CountConn] = []
    try:
        async with asyncio.timeout(max(30.0, phase.streams * phase.events / 10_000)):
            for _, conn in await asyncio.gather(
                *(
                    loop.create_connection(
                        partial(CountConn, ctx.clients.request(path, port, i), phase.events),
                        HOST,
                        port,
                    )
                    for i in range(phase.streams)
                )
            ):
                conns.append(conn)
            await asyncio.gather(*(conn.done for conn in conns))
    except TimeoutError:
        pass  # reported as incomplete
    finally:
        for conn in conns:
            conn.close()
    await ctx.wait_open(0, timeout=10)
    return conns


async def _tokens(ctx: Context, phase: Tokens) -> dict[str, Any]:
    meter = Meter(ctx)
    rates: list[float] = []
    firsts: list[float] = []
    first_events: list[float] = []
    received = 0
    complete = True
    async with ctx.profiled(f"tokens{phase.streams}x{phase.events}"):
        for _ in range(phase.repeat):
            with meter.window():
                conns = await _token_round(ctx, phase)
            count = sum(conn.count for conn in conns)
            received += count
            complete &= count >= phase.streams * phase.events
            end = max((c.t_done for c in conns if c.t_done is not None), default=time.time())
            rates.append(count / (end - min(c.t_sent for c in conns)))
            firsts += [c.t_first_byte - c.t_sent for c in conns if c.t_first_byte is not None]
            first_events += [
                c.t_first_event - c.t_sent for c in conns if c.t_first_event is not None
            ]
    # The polls of wait_open are in the windows too: a few requests against 100k+ events.
    cpu = meter.server_s
    return {
        "received": received,
        "complete": complete,
        # The best round: the one least disturbed by anything else on the machine.
        "events_per_s": max(rates),
        "events_per_s_rounds": rates,
        "cpu_s": cpu,
        "cpu_ms_per_100k": cpu * 1e3 * 100_000 / received if received else None,
        "ttfb_ms": ms(statistics.median(firsts)) if firsts else None,
        "ttfb_max_ms": ms(max(firsts)) if firsts else None,
        "ttfe_ms": ms(statistics.median(first_events)) if first_events else None,
        "others_cpu_pct": meter.others_pct,
    }


async def _churn(ctx: Context, phase: Churn) -> dict[str, Any]:
    port = ctx.ports[0]
    pids = ctx.pids
    meter = Meter(ctx)

    def request(port: int, index: int) -> bytes:
        return ctx.listen(port, index)

    rss_start = rss_kb(pids)
    # Warm-up, not measured: the first connections grow pools and caches.
    warm = await churn(request, port, 0.5, phase.concurrency)
    await ctx.wait_open(0, timeout=10)
    completed = failed = 0
    seconds = released = 0.0
    growth: list[int] = []
    open_after = 0
    async with ctx.profiled("churn"):
        for _ in range(2):
            rss_before = rss_kb(pids)
            with meter.window():
                result = await churn(request, port, phase.seconds / 2, phase.concurrency)
                open_after, waited = await ctx.wait_open(0, timeout=10)
            growth.append(rss_kb(pids) - rss_before)
            completed += result.completed
            failed += result.failed
            seconds += result.seconds
            released += waited
    return {
        "elapsed_s": seconds,
        "completed": completed,
        "failed": failed,
        "accepted_per_s": completed / seconds,
        # Counted until the servers report every stream released.
        "conn_per_s": completed / (seconds + released),
        "release_wait_s": released,
        "open_after": open_after,
        "cpu_us_per_conn": meter.server_s * 1e6 / completed if completed else None,
        "rss_growth_kb": growth,
        # From before the warm-up to the end, over every cycle (warm-up included).
        "rss_total_growth_kb": rss_kb(pids) - rss_start,
        "cycles_total": completed + warm.completed,
        "others_cpu_pct": meter.others_pct,
    }


async def _warm_up(ctx: Context) -> None:
    """Import and allocate what the first requests would, before any baseline is read."""
    loop = asyncio.get_running_loop()
    for port in ctx.ports:
        request = ctx.clients.request(f"{ctx.app.tokens}?n=100", port, 1)
        _, conn = await loop.create_connection(partial(CountConn, request, 100), HOST, port)
        async with asyncio.timeout(10):
            await conn.done
        conn.close()
    opened = await open_many(
        lambda port, index: FanoutConn(ctx.listen(port, index), Tally()), ctx.ports, 20
    )
    for fan in opened.conns:
        fan.close()
    await ctx.wait_open(0, timeout=10)
    await asyncio.sleep(0.3)


_PHASES: dict[type, Callable[[Context, Any], Any]] = {
    Fanout: _fanout,
    Tokens: _tokens,
    Churn: _churn,
    Storm: storm,
}


def _record(run: Run, phase: Phase) -> dict[str, Any]:
    """The fields that name a phase of a run in its record."""
    return {
        "scenario": type(phase).__name__.lower(),
        "project": run.project,
        "server": run.server,
        "app": run.app,
        "backend": run.backend,
        "workers": run.workers,
        **dataclasses.asdict(phase),
    }


async def execute(
    run: Run, out: Path, report: Callable[[dict[str, Any]], None], database: Database | None
) -> list[dict[str, Any]]:
    """Start the run's processes, measure each phase, stop everything; one record per phase.

    ``database``: the seeded file the realistic profile copies for this run (None: lean).
    A failure is recorded (``"error"``) rather than raised, so that one broken configuration
    does not cost the rest of the benchmark.
    """
    profile = PROFILES[run.project]
    app = app_for(run.app, profile)
    log_dir = out / "logs"
    records: list[dict[str, Any]] = []
    procs: list[Proc] = []
    clients = Clients()
    try:
        env = {"STREAM_BACKEND": run.backend, "DJANGO_SETTINGS_MODULE": profile.settings}
        if profile.seeded and database is not None:
            env["BENCH_DB_PATH"] = str(database.fresh_copy())
            clients = database.clients
        redis = None
        if run.backend == "redis":
            redis = await start_redis(log_dir)
            procs.append(redis)
            env["REDIS_URL"] = f"redis://{HOST}:{redis.port}/0"
            env["STREAM_KEY_PREFIX"] = f"bench{os.getpid()}"
        servers = []
        for _ in range(run.workers):
            server = await start_server(run.server, app.target, env, app.stats, log_dir)
            procs.append(server)
            servers.append(server)
        ctx = Context(run, app, profile, clients, servers, out, redis)
        await _warm_up(ctx)
        for phase in run.phases:
            record = _record(run, phase)
            try:
                record.update(await _PHASES[type(phase)](ctx, phase))
            except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
                record["error"] = f"{type(exc).__name__}: {exc}"
            if ctx.profiles:
                record["profile"], ctx.profiles = ctx.profiles, {}
            records.append(record)
            report(record)
    except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
        for phase in run.phases[len(records) :]:
            record = _record(run, phase)
            record["error"] = f"{type(exc).__name__}: {exc}"
            records.append(record)
            report(record)
    finally:
        for proc in reversed(procs):
            proc.stop()
    return records
