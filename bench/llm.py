"""``python -m bench.llm [--quick]``: the LLM path against a fake upstream, and that upstream alone.

The fake OpenAI-compatible upstream (``tests.fake_openai``) and the load generator share core 1;
our server (uvicorn, ``bench.benchproject``) has core 0. The same load generator asks the
upstream directly (``direct``) and asks our server (``chat``: ``stream_chat`` + ``llm_response``;
``generation``: ``create_generation`` + ``stream_generation``), which asks the upstream in turn.
Our server runs twice, in fresh processes: coalescing off (``STREAM_LLM_COALESCE_MS=0``,
``STREAM_GENERATION_COALESCE_MS=0``) and on (50 ms / 400 characters for both).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import uvloop

from bench.llm_load import Meter, Streams, Target, Ttft, measure_streams, measure_ttft, warm_up
from bench.procs import CLIENT_CORE, ROOT, Proc, raise_nofile, start_server, start_upstream
from bench.profiling import Profiler
from bench.report import load_average, machine, number, text_table, write_json

RESULTS = ROOT / "bench" / "results"
Record = dict[str, Any]


@dataclass(frozen=True)
class Coalescing:
    """Our server's coalescing settings, for direct streams and generations alike."""

    name: str
    ms: float
    chars: int

    def env(self) -> dict[str, str]:
        """The demo settings' environment variables for this mode."""
        ms, chars = str(self.ms), str(self.chars)
        return {
            "STREAM_LLM_COALESCE_MS": ms,
            "STREAM_LLM_COALESCE_CHARS": chars,
            "STREAM_GENERATION_COALESCE_MS": ms,
            "STREAM_GENERATION_COALESCE_CHARS": chars,
        }


MODES = (Coalescing("off", 0, 0), Coalescing("50ms/400", 50, 400))
VIEWS = {"chat": "/bench/llm/chat/", "generation": "/bench/llm/generation/"}


@dataclass(frozen=True)
class Plan:
    """The phases run against every target."""

    ttft: Ttft
    streams: tuple[Streams, ...]


FULL = Plan(Ttft(50), (Streams(1, 20_000), Streams(50, 2_000, rounds=2)))
QUICK = Plan(Ttft(20), (Streams(1, 5_000, rounds=2), Streams(50, 500, rounds=2)))


async def _phases(
    target: Target,
    mode: str,
    plan: Plan,
    pids: tuple[list[int], list[int]],
    report: Callable[[Record], None],
    profile_dir: Path | None = None,
) -> list[Record]:
    """Every phase of ``plan`` against ``target``; a failed phase is recorded, not raised.

    With ``profile_dir``, py-spy records our server (not the upstream) during each phase.
    """
    records = []
    phases: list[Ttft | Streams] = [plan.ttft, *plan.streams]
    try:
        await warm_up(target, plan.ttft)
        failed = None
    except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
        failed = f"warm-up: {type(exc).__name__}: {exc}"
    for phase in phases:
        scenario = "ttft" if isinstance(phase, Ttft) else "streams"
        record: Record = {"scenario": scenario, "target": target.name, "coalescing": mode}
        record.update(asdict(phase))
        if failed:
            record["error"] = failed
            records.append(record)
            report(record)
            continue
        meter = Meter(*pids)
        profiler = None
        if profile_dir is not None and pids[0]:
            label = f"{target.name}-{mode.replace('/', '-')}-{scenario}-{record['tokens']}"
            profiler = Profiler(pids[0][0], profile_dir / f"profile-llm-{label}.txt")
        try:
            if isinstance(phase, Ttft):
                record.update(await measure_ttft(target, phase, meter))
            else:
                record.update(await measure_streams(target, phase, meter))
        except (OSError, TimeoutError, RuntimeError, ValueError) as exc:
            record["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            if profiler is not None:
                record["profile"] = profiler.stop()
        if not pids[0]:
            # Direct: no server of ours in the way (the upstream's CPU has its own fields).
            for key in ("server_cpu_ms_per_request", "server_cpu_s", "server_cpu_ms_per_100k"):
                record.pop(key, None)
        records.append(record)
        report(record)
    return records


async def run(
    plan: Plan, out: Path, report: Callable[[Record], None], profile: bool = False
) -> list[Record]:
    """Start the upstream, measure it directly, then our server in each coalescing mode.

    Every process started here is stopped (by PID) in the ``finally``.
    """
    logs = out / "logs"
    records: list[Record] = []
    procs: list[Proc] = []
    try:
        upstream = await start_upstream(logs)
        procs.append(upstream)
        direct = Target("direct", upstream.port, "")
        records += await _phases(direct, "-", plan, ([], upstream.pids), report)
        for mode in MODES:
            env = {
                **mode.env(),
                "OPENAI_BASE_URL": f"http://127.0.0.1:{upstream.port}/v1",
                "OPENAI_API_KEY": "bench",
            }
            try:
                server = await start_server(
                    "uvicorn", "bench.benchproject.asgi:application", env, "/bench/stats/", logs
                )
            except (OSError, TimeoutError, RuntimeError) as exc:
                # Recorded, so that the other mode and the direct figures are still reported.
                failed = {"scenario": "setup", "target": "server", "coalescing": mode.name}
                failed["error"] = f"{type(exc).__name__}: {exc}"
                records.append(failed)
                report(failed)
                continue
            procs.append(server)
            try:
                for name, path in VIEWS.items():
                    target = Target(name, server.port, path)
                    pids = (server.pids, upstream.pids)
                    profile_dir = out if profile else None
                    records += await _phases(target, mode.name, plan, pids, report, profile_dir)
            finally:
                procs.remove(server)
                server.stop()
    finally:
        for proc in reversed(procs):
            proc.stop()
    return records


def add_comparisons(records: list[Record]) -> None:
    """Each record against ``direct`` in the same shape: TTFT overhead, tokens/s ratio."""
    direct = {
        (r["scenario"], r.get("streams"), r["tokens"]): r
        for r in records
        if r["target"] == "direct" and "error" not in r
    }
    for record in records:
        twin = direct.get((record["scenario"], record.get("streams"), record.get("tokens")))
        if twin is None or twin is record or "error" in record:
            continue
        if record["scenario"] == "ttft" and record["ttft_ms"] and twin["ttft_ms"]:
            record["ttft_overhead_ms"] = record["ttft_ms"] - twin["ttft_ms"]
        if record["scenario"] == "streams" and record["tokens_per_s"] and twin["tokens_per_s"]:
            record["tokens_per_s_x_direct"] = record["tokens_per_s"] / twin["tokens_per_s"]


def format_tables(records: list[Record]) -> str:
    """The TTFT table and the throughput table."""
    ok = [r for r in records if "error" not in r]
    ttft = [
        [
            r["target"], r["coalescing"], f"{r['complete']}/{r['requests']}",
            number(r["ttft_ms"], 2), number(r["ttft_p90_ms"], 2),
            number(r.get("ttft_overhead_ms"), 2), number(r["first_byte_ms"], 2),
            number(r.get("server_cpu_ms_per_request"), 2), number(r["others_cpu_pct"], 0),
        ]
        for r in ok
        if r["scenario"] == "ttft"
    ]  # fmt: skip
    streams = [
        [
            r["target"], r["coalescing"], f"{r['streams']} x {r['tokens']:,}",
            f"{r['complete']}/{r['expected']}", number(r["tokens_per_s"], 0),
            number(r.get("tokens_per_s_x_direct"), 2), number(r["frames_per_stream"], 0),
            number(r["ttft_ms"], 1), number(r.get("server_cpu_ms_per_100k"), 0),
            number(r["upstream_cpu_ms_per_100k"], 0), number(r["others_cpu_pct"], 0),
        ]
        for r in ok
        if r["scenario"] == "streams"
    ]  # fmt: skip
    parts = [
        text_table(
            "TIME TO FIRST TOKEN (short answers, one request at a time, a new connection each)",
            ["target", "coalescing", "complete", "median ms", "p90 ms", "overhead ms",
             "first byte ms", "server CPU ms/req", "others %"],
            ttft,
        ),
        text_table(
            "TOKEN THROUGHPUT (tokens/s of the best round; CPU over all rounds)",
            ["target", "coalescing", "streams x tokens", "complete", "tokens/s", "x direct",
             "frames/stream", "TTFT ms", "server CPU ms/100k", "upstream CPU ms/100k",
             "others %"],
            streams,
        ),
    ]  # fmt: skip
    for record in ok:
        summary = record.get("profile")
        if not summary:
            continue
        title = f"PROFILE {record['target']} ({record['coalescing']}) {record['scenario']}"
        if "error" in summary:
            parts.append(f"{title}: {summary['error']}")
            continue
        lines = [f"{title}: {summary['samples']} busy samples, {summary['file']}"]
        for kind in ("self", "inclusive"):
            lines.append(f"  top {kind}:")
            lines += [f"    {share:5.1f}%  {frame}" for frame, share in summary[kind]]
        parts.append("\n".join(lines))
    errors = [f"ERROR {r['target']} {r['scenario']}: {r['error']}" for r in records if "error" in r]
    return "\n\n".join(parts + (["\n".join(errors)] if errors else []))


def _versions() -> dict[str, str | None]:
    """The client stack of ``stream_chat`` (the fake upstream is the repository's)."""
    found: dict[str, str | None] = {}
    for package in ("openai", "httpx2"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    return found


def _progress(record: Record) -> None:
    where = f"  {record['target']} ({record['coalescing']}) {record['scenario']}"
    if "error" in record:
        print(f"{where}: {record['error']}", flush=True)
    elif record["scenario"] == "ttft":
        print(f"{where}: {record['ttft_ms']:.2f} ms median", flush=True)
    else:
        rate = number(record["tokens_per_s"], 0)
        print(f"{where} {record['streams']} x {record['tokens']}: {rate} tokens/s", flush=True)


def main(argv: list[str] | None = None) -> int:
    """Run the LLM benchmark, print the tables, write the JSON; 0 unless the setup fails."""
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller phases, about a minute")
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: bench/results/llm-<mode>-<time>.json)"
    )
    parser.add_argument(
        "--profile", action="store_true", help="py-spy on our server during every phase"
    )
    args = parser.parse_args(argv)
    if (os.cpu_count() or 1) < 2:
        sys.exit("the benchmark needs 2 cores: our server on core 0, the rest on core 1")
    raise_nofile()
    os.sched_setaffinity(0, {CLIENT_CORE})
    mode = "quick" if args.quick else "full"
    plan = QUICK if args.quick else FULL
    out_file = args.out or RESULTS / f"llm-{mode}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    load = load_average()
    if load[0] > 0.5:
        print(f"note: load average {load[0]:.2f} before starting: other work shares these cores")
    started = time.time()
    records = uvloop.run(run(plan, out_file.parent, _progress, args.profile))
    add_comparisons(records)
    print()
    print(format_tables(records))
    document = {
        "benchmark": "llm",
        "mode": mode,
        "command": " ".join(
            [
                Path(sys.executable).name,
                "-m",
                "bench.llm",
                *(sys.argv[1:] if argv is None else argv),
            ]
        ),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "load_average_before": load,
        "profiled": args.profile,
        "plan": asdict(plan),
        "coalescing_modes": [asdict(m) for m in MODES],
        "machine": {**machine(), "llm_versions": _versions()},
        "records": records,
    }
    write_json(out_file, document)
    print(f"\nresults: {out_file} ({document['duration_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
