"""The targets of issue 13 (and the design's earlier ones), checked against one run's records.

Each target is judged on the unrounded figure of this run; a target whose run or size is not
in the plan (``--quick`` has no 5,000-client storm) is "not measured". Ratios are to the
yardsticks of the same run and, for the plain Django view, of the same project.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stream_app.conf import DEFAULTS

__all__ = ["check_targets"]

Record = dict[str, Any]
MEMORY = {"backend": "memory", "workers": 1}
# p99 of stream_app at 5,000 clients before issue 13 (its table: notifications on connect).
P99_5000_BEFORE_MS = 82.0
# Each worker's Redis command pool (the realistic project keeps the default).
REDIS_POOL = int(DEFAULTS["REDIS_MAX_CONNECTIONS"])


def _ours(records: list[Record], scenario: str, **match: Any) -> list[Record]:
    """Our records on uvicorn (the main server), realistic project, matching ``match``."""
    fields = {"scenario": scenario, "server": "uvicorn", "app": "ours", "project": "realistic"}
    fields.update(match)
    return [r for r in records if all(r.get(k) == v for k, v in fields.items())]


def _target(
    name: str,
    limit: str,
    records: list[Record],
    figure: Callable[[Record], float | None],
    ok: Callable[[float], bool],
    unit: str = "",
) -> list[Record]:
    if not records:
        return [{"target": name, "limit": limit, "measured": None, "ok": None, "where": ""}]
    rows = []
    for record in records:
        value = None if "error" in record else figure(record)
        where = f"{record['backend']}, {record['workers']} worker(s)"
        if "clients" in record:
            where = f"N={record['clients']:,}, {where}"
        rows.append(
            {
                "target": name,
                "limit": limit,
                "measured": value,
                "unit": unit,
                "ok": None if value is None else ok(value),
                "where": where,
                "error": record.get("error"),
            }
        )
    return rows


def _field(name: str) -> Callable[[Record], float | None]:
    return lambda record: record.get(name)


def _storm_targets(records: list[Record]) -> list[Record]:
    rows: list[Record] = []
    storms = _ours(records, "storm")
    for clients, workers, seconds in ((5000, 1, 4.0), (5000, 2, 6.0), (10000, 1, 8.0)):
        backend = "memory" if workers == 1 else "redis"
        found = _ours(records, "storm", clients=clients, workers=workers, backend=backend)
        rows += _target(
            f"storm: {clients:,} clients x 100 missed, caught up and live ({backend})",
            f"<= {seconds:g} s", found, _field("caught_up_s"),
            lambda v, s=seconds: v <= s, " s",
        )  # fmt: skip
    rows += _target(
        "storm: delivered in order, every client", "100%", storms,
        lambda r: r["caught_up"] / r["clients"], lambda v: v >= 1.0, " (fraction)",
    )  # fmt: skip
    rows += _target(
        "storm: spurious reset events", "0", storms, _field("resets"), lambda v: v == 0,
    )  # fmt: skip
    rows += _target(
        "storm: clients closed as slow consumers", "0", storms,
        _field("slow_consumers"), lambda v: v == 0,
    )  # fmt: skip
    rows += _target(
        "storm: history reads of the shared channel per client (shared)", "<= 0.01",
        storms, lambda r: r["history_reads_channel"] / r["clients"], lambda v: v <= 0.01,
    )  # fmt: skip
    rows += _target(
        "storm: slowest publish during the storm", "<= 250 ms", storms,
        lambda r: max(r["probe_publish_ms"] or 0, r["live_publish_ms"] or 0),
        lambda v: v <= 250, " ms",
    )  # fmt: skip
    redis = [r for r in storms if r["backend"] == "redis"]
    rows += _target(
        "storm: Redis connections (peak, all workers) below one worker's pool",
        f"< {REDIS_POOL}", redis,
        lambda r: r["redis_peak_clients"], lambda v: v < REDIS_POOL,
    )  # fmt: skip
    rows += _target(
        "storm: peak RSS growth vs idle-connection memory", "<= 2x", storms,
        _field("rss_peak_x_idle"), lambda v: v <= 2.0, "x",
    )  # fmt: skip
    return rows


def check_targets(records: list[Record]) -> list[Record]:
    """Every target against our uvicorn figures of this run (None: not measured)."""
    rows: list[Record] = []
    churns = _ours(records, "churn", **MEMORY)
    rows += _target(
        "connections/s vs the plain Django view", ">= 1.0x", churns,
        _field("conn_x_django"), lambda v: v >= 1.0, "x",
    )  # fmt: skip
    rows += _target(
        "connections/s vs raw ASGI", ">= 0.5x", churns,
        _field("conn_x_raw"), lambda v: v >= 0.5, "x",
    )  # fmt: skip
    rows += _target(
        "RSS growth over every churn cycle (>= 2,000 cycles)", "<= 5,120 KB", churns,
        lambda r: r["rss_total_growth_kb"] if r["cycles_total"] >= 2000 else None,
        lambda v: v <= 5120, " KB",
    )  # fmt: skip
    rows += _target(
        "time to first event vs the plain Django view", "<= 1.0x",
        _ours(records, "tokens", streams=1, **MEMORY), _field("ttfe_x_django"),
        lambda v: v <= 1.0, "x",
    )  # fmt: skip
    idle = [r for r in _ours(records, "fanout", **MEMORY) if r["clients"] in (1000, 5000)]
    rows += _target(
        "KB per idle connection vs raw ASGI", "<= 1.3x", idle,
        _field("rss_x_raw"), lambda v: v <= 1.3, "x",
    )  # fmt: skip
    rows += _target(
        "fan-out CPU per delivered event vs raw ASGI", "<= 1.0x",
        _ours(records, "fanout", clients=1000, **MEMORY), _field("cpu_x_raw"),
        lambda v: v <= 1.0, "x",
    )  # fmt: skip
    rows += _target(
        "fan-out p99 at 5,000 clients, 10 broadcasts/s (before: 82 ms)",
        f"<= {P99_5000_BEFORE_MS:g} ms",
        _ours(records, "fanout", clients=5000, rate=10, **MEMORY), _field("p99_ms"),
        lambda v: v <= P99_5000_BEFORE_MS, " ms",
    )  # fmt: skip
    rows += _storm_targets(records)
    # The design's earlier targets, still held.
    rows += _target(
        "fan-out p99 at 1,000 clients, 10 broadcasts/s", "<= 60 ms",
        _ours(records, "fanout", clients=1000, rate=10, **MEMORY), _field("p99_ms"),
        lambda v: v <= 60, " ms",
    )  # fmt: skip
    big = [r for r in _ours(records, "fanout") if r.get("clients") in (5000, 10000)]
    rows += _target(
        "delivered at 5,000 and 10,000 clients", "100%",
        big, _field("delivered_fraction"), lambda v: v >= 1.0, " (fraction)",
    )  # fmt: skip
    rows += _target(
        "events/s of one token stream vs raw ASGI", ">= 1.0x",
        _ours(records, "tokens", streams=1, **MEMORY), _field("eps_x_raw"),
        lambda v: v >= 1.0, "x",
    )  # fmt: skip
    rows += _target(
        "churn: connections accepted and released per second", ">= 1,000/s",
        churns, _field("conn_per_s"), lambda v: v >= 1000, "/s",
    )  # fmt: skip
    return rows
