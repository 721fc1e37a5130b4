"""Ratios to the yardsticks, the targets, the tables, and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import subprocess
from collections.abc import Callable, Iterable
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.procs import ROOT

__all__ = [
    "add_ratios",
    "figure",
    "format_tables",
    "load_average",
    "machine",
    "number",
    "progress_line",
    "text_table",
    "write_json",
]

Record = dict[str, Any]

# The fields that make two records comparable, per scenario (besides the server).
_SHAPE = {
    "fanout": ("clients", "rate", "broadcasts"),
    "tokens": ("streams", "events"),
    "churn": ("seconds", "concurrency"),
    "storm": ("clients", "missed", "spread"),
}
# Ratio fields: (name, metric); lower is better for CPU, memory and latency.
_RATIOS = {
    "fanout": (("cpu", "cpu_us_per_event"), ("rss", "rss_per_conn_kb"), ("p99", "p99_ms")),
    "tokens": (("eps", "events_per_s"), ("cpu", "cpu_ms_per_100k"), ("ttfe", "ttfe_ms")),
    "churn": (("conn", "conn_per_s"),),
    "storm": (),
}
YARDSTICKS = ("raw", "django")


def _key(record: Record) -> tuple[Any, ...]:
    return (record["scenario"], record["server"], *(record[f] for f in _SHAPE[record["scenario"]]))


def _project(app: str, record: Record) -> str:
    # The raw ASGI app is the same in every project; the plain Django view is compared within
    # its own project.
    return "" if app == "raw" else str(record.get("project", ""))


def add_ratios(records: list[Record]) -> None:
    """Add ``<ratio>_x_raw`` and ``<ratio>_x_django`` to every record with a yardstick twin."""
    sticks = {
        (record["app"], _project(record["app"], record), *_key(record)): record
        for record in records
        if record["app"] in YARDSTICKS and "error" not in record
    }
    for record in records:
        if "error" in record:
            continue
        for stick in YARDSTICKS:
            twin = sticks.get((stick, _project(stick, record), *_key(record)))
            if twin is None or twin is record:
                continue
            for name, metric in _RATIOS[record["scenario"]]:
                ours, theirs = record.get(metric), twin.get(metric)
                if ours is not None and theirs:
                    record[f"{name}_x_{stick}"] = ours / theirs


def number(value: Any, digits: int = 1) -> str:
    """A figure for a table cell: thousands separated, ``-`` for a missing one."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def text_table(title: str, headers: list[str], rows: Iterable[list[str]]) -> str:
    """A plain-text table, columns right-aligned, a rule under the headers."""
    body = [headers, *rows]
    widths = [max(len(row[i]) for row in body) for i in range(len(headers))]
    lines = [title]
    for index, row in enumerate(body):
        lines.append("  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)))
        if index == 0:
            lines.append("  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _name(record: Record) -> list[str]:
    backend = record["backend"] if record["app"].startswith("ours") else ""
    if record["workers"] > 1:
        backend += f" x{record['workers']}"
    project = "" if record["app"] == "raw" else record.get("project", "")
    return [project, record["server"], record["app"], backend]


Column = tuple[str, Callable[[Record], str]]


def _ratio(field: str) -> Callable[[Record], str]:
    return lambda r: number(r.get(field), 2)


_COLUMNS: dict[str, tuple[str, list[Column]]] = {
    "fanout": (
        "FAN-OUT (idle listeners, stamped broadcasts)",
        [
            ("N", lambda r: number(r["clients"])),
            ("bc/s x K", lambda r: f"{number(r['rate'], 0)} x {r['broadcasts']}"),
            ("conn/s", lambda r: number(r["connect_per_s"], 0)),
            ("delivered", lambda r: f"{100 * r['delivered_fraction']:.2f}%"),
            ("p50 ms", lambda r: number(r["p50_ms"], 2)),
            ("p99 ms", lambda r: number(r["p99_ms"], 2)),
            ("CPU us/ev", lambda r: number(r["cpu_us_per_event"])),
            ("x raw", _ratio("cpu_x_raw")),
            ("x django", _ratio("cpu_x_django")),
            ("KB/conn", lambda r: number(r["rss_per_conn_kb"])),
            ("x raw", _ratio("rss_x_raw")),
            ("threads", lambda r: number(r["threads"])),
            ("others %", lambda r: number(r["others_cpu_pct"], 0)),
        ],
    ),
    "tokens": (
        "TOKEN STREAMING (tiny events, backpressure; events/s of the best round)",
        [
            ("streams x events", lambda r: f"{r['streams']} x {r['events']:,}"),
            ("events/s", lambda r: number(r["events_per_s"], 0)),
            ("x raw", _ratio("eps_x_raw")),
            ("x django", _ratio("eps_x_django")),
            ("CPU ms/100k", lambda r: number(r["cpu_ms_per_100k"])),
            ("x raw", _ratio("cpu_x_raw")),
            ("TTFB ms", lambda r: number(r["ttfb_ms"], 2)),
            ("first event ms", lambda r: number(r["ttfe_ms"], 2)),
            ("x django", _ratio("ttfe_x_django")),
            ("complete", lambda r: str(r["complete"])),
            ("others %", lambda r: number(r["others_cpu_pct"], 0)),
        ],
    ),
    "churn": (
        "CHURN (connect, first byte, close; conn/s counted until all are released)",
        [
            ("conn/s", lambda r: number(r["conn_per_s"], 0)),
            ("x raw", _ratio("conn_x_raw")),
            ("x django", _ratio("conn_x_django")),
            ("accepted/s", lambda r: number(r["accepted_per_s"], 0)),
            ("failed", lambda r: number(r["failed"])),
            ("open after", lambda r: number(r["open_after"])),
            ("CPU us/conn", lambda r: number(r["cpu_us_per_conn"])),
            ("RSS growth KB (round 1, 2)", lambda r: ", ".join(map(number, r["rss_growth_kb"]))),
            ("RSS growth KB / cycles", lambda r: _growth(r)),
            ("others %", lambda r: number(r["others_cpu_pct"], 0)),
        ],
    ),
    "storm": (
        "RECONNECT STORM (N drop, K missed, all back within 1 s with Last-Event-ID, then live)",
        [
            ("N", lambda r: number(r["clients"])),
            ("K", lambda r: number(r["missed"])),
            ("caught up s", lambda r: number(r["caught_up_s"], 3)),
            ("in order", lambda r: f"{r['caught_up']:,}/{r['clients']:,}"),
            ("delivered", lambda r: f"{100 * r['delivered_fraction']:.2f}%"),
            ("resets", lambda r: number(r["resets"])),
            ("slow", lambda r: number(r["slow_consumers"])),
            ("publish ms (mid, live)", lambda r: _pair(r, "probe_publish_ms", "live_publish_ms")),
            (
                "history reads (channel, all)",
                lambda r: _pair(r, "history_reads_channel", "history_reads"),
            ),
            ("Redis XRANGE/XREAD", lambda r: _redis(r)),
            ("Redis conns", lambda r: number(r.get("redis_peak_clients"))),
            ("idle KB", lambda r: number(r["rss_idle_conn_kb"])),
            ("peak growth KB", lambda r: number(r["rss_peak_growth_kb"])),
            ("x idle", lambda r: number(r["rss_peak_x_idle"], 2)),
            ("CPU s", lambda r: number(r["cpu_s"], 2)),
            ("log lines", lambda r: number(r["log_lines"])),
            ("others %", lambda r: number(r["others_cpu_pct"], 0)),
        ],
    ),
}


def _growth(record: Record) -> str:
    return f"{number(record['rss_total_growth_kb'])} / {number(record['cycles_total'])}"


def _pair(record: Record, first: str, second: str) -> str:
    return f"{number(record[first], 1)}, {number(record[second], 1)}"


def _redis(record: Record) -> str:
    calls = record.get("redis_history_calls")
    return "-" if calls is None else "/".join(number(calls[c]) for c in ("xrange", "xread"))


_RESULTS = {True: "met", False: "NOT MET", None: "not measured"}


def figure(value: float | int, unit: str = "") -> str:
    """A target's figure as measured: never rounded to a whole number (4 decimals)."""
    text = f"{value:,}" if isinstance(value, int) else f"{value:,.4f}"
    return text + unit


def format_tables(records: list[Record], targets: list[Record]) -> str:
    """The tables printed at the end of a run."""
    out = []
    for scenario, (title, columns) in _COLUMNS.items():
        rows = [r for r in records if r["scenario"] == scenario and "error" not in r]
        if rows:
            headers = ["project", "server", "app", "backend", *(header for header, _ in columns)]
            out.append(
                text_table(
                    title, headers, ([*_name(r), *(cell(r) for _, cell in columns)] for r in rows)
                )
            )
    for record in records:
        for label, summary in record.get("profile", {}).items():
            out.append(_profile(record, label, summary))
    errors = [r for r in records if "error" in r]
    if errors:
        out.append(
            "ERRORS\n"
            + "\n".join(f"  {' '.join(_name(r))} {r['scenario']}: {r['error']}" for r in errors)
        )
    target_rows = (
        [
            t["target"],
            t["limit"],
            t["where"],
            "-" if t["measured"] is None else figure(t["measured"], t["unit"]),
            "ERROR" if t.get("error") else _RESULTS[t["ok"]],
        ]
        for t in targets
    )
    out.append(
        text_table(
            "TARGETS (ours on uvicorn, realistic project; ratios to the yardsticks of this run)",
            ["target", "limit", "where", "measured", "result"],
            target_rows,
        )
    )
    return "\n\n".join(out)


def _profile(record: Record, label: str, summary: dict[str, Any]) -> str:
    title = f"PROFILE {' '.join(_name(record)).strip()} {label}"
    if "error" in summary:
        return f"{title}: {summary['error']}"
    lines = [f"{title}: {summary['samples']} busy samples, {summary['file']}"]
    for kind in ("self", "inclusive"):
        lines.append(f"  top {kind}:")
        lines += [f"    {share:5.1f}%  {frame}" for frame, share in summary[kind]]
    return "\n".join(lines)


def progress_line(record: Record) -> str:
    """One line per finished phase, printed as the benchmark goes."""
    name = " ".join(part for part in _name(record) if part)
    if "error" in record:
        return f"  {name} {record['scenario']}: ERROR {record['error']}"
    scenario = record["scenario"]
    if scenario == "fanout":
        detail = (
            f"N={record['clients']} delivered={100 * record['delivered_fraction']:.2f}% "
            f"p99={number(record['p99_ms'], 2)} ms cpu={number(record['cpu_us_per_event'])} us/ev "
            f"rss={number(record['rss_per_conn_kb'])} KB/conn"
        )
    elif scenario == "tokens":
        detail = (
            f"{record['streams']}x{record['events']} {number(record['events_per_s'], 0)} ev/s "
            f"cpu={number(record['cpu_ms_per_100k'])} ms/100k"
        )
    elif scenario == "storm":
        publish = _pair(record, "probe_publish_ms", "live_publish_ms")
        detail = (
            f"N={record['clients']} caught up in {number(record['caught_up_s'], 3)} s, "
            f"in order {record['caught_up']}/{record['clients']}, resets={record['resets']} "
            f"slow={record['slow_consumers']} publish={publish} ms "
            f"history reads={record['history_reads_channel']}"
        )
    else:
        detail = f"{number(record['conn_per_s'], 0)} conn/s open_after={record['open_after']}"
    return f"  {name} {scenario}: {detail} (others: {record['others_cpu_pct']:.0f}% of a core)"


def _run(command: list[str]) -> str:
    try:
        return subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        ).stdout.strip()
    except OSError:
        return ""


def machine() -> dict[str, Any]:
    """What the figures depend on: CPU, memory, kernel, versions, and the code measured."""
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                  if line.startswith("model name")), "")  # fmt: skip
    meminfo = Path("/proc/meminfo").read_text().split("\n", 1)[0]
    versions = {}
    for package in ("django", "uvicorn", "daphne", "granian", "uvloop", "httptools", "redis"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "memory": meminfo.split(":", 1)[1].strip(),
        "kernel": platform.release(),
        "load_average": load_average(),
        "python": platform.python_version(),
        "versions": versions,
        "redis_server": _run(["redis-server", "--version"]),
        "commit": _run(["git", "rev-parse", "HEAD"]),
        "stream_app_modified": bool(_run(["git", "status", "--porcelain", "--", "stream_app"])),
    }


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages: others' work on the same cores skews the figures."""
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def write_json(path: Path, document: dict[str, Any]) -> None:
    """Write the results document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
