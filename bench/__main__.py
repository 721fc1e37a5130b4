"""``python -m bench [--quick]``: run the benchmark, print the tables, write the JSON.

The load generator runs in this process, pinned to core 1; every server is pinned to core 0.
Every run serves the realistic project (``bench.clients``) unless labelled ``lean``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from bench.clients import Database
from bench.context import Churn, Fanout, Run, Storm, Tokens
from bench.procs import CLIENT_CORE, ROOT, raise_nofile
from bench.report import (
    add_ratios,
    figure,
    format_tables,
    load_average,
    machine,
    progress_line,
    write_json,
)
from bench.runner import execute
from bench.targets import check_targets

RESULTS = ROOT / "bench" / "results"
SERVERS = ("uvicorn", "daphne", "granian")


# Clients of the reconnect storm in --quick (the targets' sizes are the full run's).
QUICK_STORM = 300


def _storms(sizes: list[int], profile: bool) -> list[Run]:
    """The storm on one worker (memory) and on two sharing Redis, fresh processes each
    (``profile``: py-spy on the worker the clients storm)."""
    runs = []
    for clients in sizes:
        phases = (Storm(clients),)
        runs.append(Run("uvicorn", "ours", phases, profile=profile))
        runs.append(Run("uvicorn", "ours", phases, "redis", workers=2, profile=profile))
    return runs


def quick_plan(profile: bool) -> list[Run]:
    """A few minutes: 1,000-listener fan-out, one 100k stream and a short churn per app
    (ours in both projects), and a small storm."""
    phases = (Fanout(1000, 10, 50), Tokens(1, 100_000), Churn(2.0, 50))
    runs = [
        Run("uvicorn", app, phases, profile=profile and app == "ours")
        for app in ("raw", "django", "ours")
    ]
    runs.append(Run("uvicorn", "ours", phases, project="lean"))
    return runs + _storms([QUICK_STORM], profile)


def big_fanout(clients: int) -> Fanout:
    """5,000 clients at 10 broadcasts/s (issue 13's p99 figure), 10,000 at 1/s."""
    return Fanout(clients, 10, 20) if clients <= 5000 else Fanout(clients, 1, 10)


def full_plan(
    servers: tuple[str, ...], max_clients: int, profile: bool, storms: list[int]
) -> list[Run]:
    """Every scenario; fan-out at each size in a fresh process so memory baselines are clean."""
    main = (Fanout(1000, 10, 100), Tokens(1, 100_000), Tokens(50, 2000), Churn(6.0, 50))
    sizes = [n for n in (5000, 10000) if n <= max_clients]
    runs: list[Run] = []
    if "uvicorn" in servers:
        for app in ("raw", "django", "ours"):
            runs.append(Run("uvicorn", app, main, profile=profile and app == "ours"))
            # Django's handler holds a thread per stream: 10,000 threads would near pid_max.
            for n in sizes if app != "django" else [n for n in sizes if n <= 5000]:
                runs.append(Run("uvicorn", app, (big_fanout(n),)))
        runs.append(Run("uvicorn", "ours-djasgi", (Fanout(1000, 10, 100),)))
        runs += [Run("uvicorn", "ours-djasgi", (big_fanout(n),)) for n in sizes if n <= 5000]
        for workers in (1, 2):
            fanouts = [Fanout(1000, 10, 100), *(big_fanout(n) for n in sizes)]
            runs += [
                Run("uvicorn", "ours", (fanout,), backend="redis", workers=workers)
                for fanout in fanouts
            ]
        # The stripped-down project of earlier runs, as a second column.
        runs += [Run("uvicorn", app, main, project="lean") for app in ("django", "ours")]
        runs += _storms([n for n in storms if n <= max_clients], profile)
    for server in servers:
        if server != "uvicorn":
            runs += [Run(server, app, main) for app in ("raw", "django", "ours")]
    return runs


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a subset in 2-3 minutes; warns on each target not met",
    )
    parser.add_argument(
        "--servers",
        default=",".join(SERVERS),
        help="comma-separated servers for the full run (default: %(default)s)",
    )
    parser.add_argument(
        "--max-clients", type=int, default=10_000, help="largest fan-out (default: %(default)s)"
    )
    parser.add_argument(
        "--storm-clients",
        default="5000,10000",
        help="comma-separated sizes of the reconnect storm in the full run (default: %(default)s)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="record our uvicorn server with py-spy during fan-out and token streaming",
    )
    parser.add_argument(
        "--out", type=Path, help="JSON file (default: bench/results/<mode>-<time>.json)"
    )
    return parser.parse_args(argv)


def _largest(runs: list[Run]) -> int:
    return max((getattr(phase, "clients", 0) for run in runs for phase in run.phases), default=0)


async def _run_all(runs: list[Run], out: Path) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = []
    database = None
    try:
        if any(run.project == "realistic" and run.app != "raw" for run in runs):
            # Half the clients are logged in, each with a session of their own.
            print("seeding the realistic project's database", flush=True)
            database = Database(max(100, _largest(runs) // 2 + 1), out / "logs")
        for index, run in enumerate(runs, 1):
            label = f"{run.server} {run.app}"
            if run.app != "raw":
                label = f"{run.project} {label}"
            if run.backend != "memory" or run.workers > 1:
                label += f" ({run.backend}, {run.workers} worker(s))"
            print(f"[{index}/{len(runs)}] {label}", flush=True)
            records += await execute(
                run, out, lambda r: print(progress_line(r), flush=True), database
            )
    finally:
        if database is not None:
            database.remove()
    return records


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; the exit status is 0 even when targets are missed (it only warns)."""
    args = _arguments(argv)
    servers = tuple(s for s in args.servers.split(",") if s)
    unknown = set(servers) - set(SERVERS)
    if unknown:
        sys.exit(f"unknown server(s): {', '.join(sorted(unknown))}")
    if (os.cpu_count() or 1) < 2:
        sys.exit("the benchmark needs 2 cores: servers on core 0, the load generator on core 1")
    raise_nofile()
    os.sched_setaffinity(0, {CLIENT_CORE})
    mode = "quick" if args.quick else "full"
    runs = (
        quick_plan(args.profile)
        if args.quick
        else full_plan(
            servers,
            args.max_clients,
            args.profile,
            [int(n) for n in args.storm_clients.split(",") if n],
        )
    )
    stamp = time.strftime("%Y%m%d-%H%M%S")
    out_file = args.out or RESULTS / f"{mode}-{stamp}.json"
    load = load_average()
    if load[0] > 0.5:
        print(f"note: load average {load[0]:.2f} before starting: other work shares these cores")
    started = time.time()
    records = uvloop.run(_run_all(runs, out_file.parent))
    add_ratios(records)
    targets = check_targets(records)
    print()
    print(format_tables(records, targets))
    document = {
        "mode": mode,
        "command": " ".join([Path(sys.executable).name, "-m", "bench", *(argv or sys.argv[1:])]),
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "duration_s": time.time() - started,
        "profiled": args.profile,
        "load_average_before": load,
        "machine": machine(),
        "records": records,
        "targets": targets,
    }
    write_json(out_file, document)
    print(f"\nresults: {out_file} ({document['duration_s']:.0f} s)")
    if args.profile:
        print("profiled run: py-spy's sampling costs the server CPU; compare figures without it")
    for target in targets:
        if target["ok"] is False:
            print(
                f"WARNING: target not met: {target['target']} ({target['where']}): measured "
                f"{figure(target['measured'], target['unit'])}, target {target['limit']}",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
