"""The dashboard snapshot: one read of everything the operator watches.

:func:`take` runs the named queries of :mod:`jobsys.live.store` on one connection
and shapes the rows into plain dicts (JSON-ready; times are aware datetimes). It
also times each query, so ``make bench`` and ``dashboard --once --json`` can show
what a refresh costs the database.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobsys.engine import queries
from jobsys.flow import store as flow_store
from jobsys.flow.service import pause_view
from jobsys.live import store

if TYPE_CHECKING:
    from jobsys.config import Config

THROUGHPUT_MINUTES = 10
RATE_WINDOW_SECONDS = 60  # the header's rates: one full sliding minute
FAILURES_WINDOW_SECONDS = 3600  # RECENT FAILURES counts the failed attempts of the last hour
PICKUP_WINDOW_SECONDS = 300
PICKUP_SAMPLES = 500
RECENT_FAILURES = 8
OPEN_ISSUES = 8
RUNNING_FANOUTS = 5
WORKERS = 50
NEXT_RUNS = 8
RATES = ("succeeded", "failed", "retried")


class _Timer:
    def __init__(self) -> None:
        self.ms: dict[str, float] = {}

    async def rows(self, conn: Any, name: str, query: str, params: dict[str, Any]) -> list[Any]:
        start = time.perf_counter()
        rows = await store.fetch_all(conn, query, params)
        self.ms[name] = round((time.perf_counter() - start) * 1000, 2)
        return rows


def lanes(
    config: Config,
    counts: list[Any],
    waits: list[Any],
    workers: list[Any],
    paused: set[str] | None = None,
) -> list[Any]:
    paused = paused or set()
    by_queue = {row["queue"]: row for row in counts}
    wait_by_queue = {row["queue"]: row["oldest_wait_seconds"] for row in waits}
    result = []
    for lane in config.lanes.values():
        rows = [by_queue.get(q, {}) for q in lane.queues]
        waits_here = [wait_by_queue[q] for q in lane.queues if wait_by_queue.get(q) is not None]
        processes = sum(1 for w in workers if lane.name in (w.get("lanes") or []))
        result.append(
            {
                "lane": lane.name,
                "queues": list(lane.queues),
                "concurrency": lane.concurrency,
                "processes": processes,
                "busy": sum(int(r.get("running", 0)) for r in rows),
                "waiting": sum(int(r.get("waiting", 0)) for r in rows),
                "scheduled": sum(int(r.get("scheduled", 0)) for r in rows),
                "oldest_wait_seconds": max(waits_here) if waits_here else None,
                "paused_queues": [q for q in lane.queues if q in paused],
            }
        )
    known = set(config.all_queues)
    for queue, row in sorted(by_queue.items()):
        if queue not in known:  # jobs in a queue no lane serves: they will never run
            result.append(
                {
                    "lane": None,
                    "queues": [queue],
                    "concurrency": 0,
                    "processes": 0,
                    "busy": int(row["running"]),
                    "waiting": int(row["waiting"]),
                    "scheduled": int(row["scheduled"]),
                    "oldest_wait_seconds": wait_by_queue.get(queue),
                    "paused_queues": [queue] if queue in paused else [],
                }
            )
    return result


def next_runs(config: Config, states: list[Any], now: datetime) -> list[dict[str, Any]]:
    from jobsys import cron

    by_name = {row["name"]: row for row in states}
    runs = []
    for name, entry in config.schedule.entries.items():
        state = by_name.get(name, {})
        paused = bool(state.get("paused")) or not entry.enabled
        try:
            tz = cron.timezone_of(config.schedule_timezone(entry))
            upcoming: datetime | None = cron.next_fire(entry.cron, now, tz).astimezone(UTC)
        except cron.CronInvalid:
            upcoming = None
        runs.append(
            {
                "name": name,
                "cron": entry.cron,
                "task": entry.fanout.task if entry.fanout else entry.task,
                "fanout": entry.fanout is not None,
                "paused": paused,
                "next_run_at": None if paused else upcoming,
                "last_tick_at": state.get("high_water"),
            }
        )
    far = datetime.max.replace(tzinfo=UTC)
    runs.sort(key=lambda r: (r["next_run_at"] or far, r["name"]))
    return runs


#: What a snapshot reads after the queues' counts and waits, in order: the name its time
#: is reported under (``query_ms``), the query, its parameters.
READS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("throughput", queries.THROUGHPUT, {"minutes": THROUGHPUT_MINUTES}),
    ("last_minute", queries.LAST_MINUTE, {"seconds": RATE_WINDOW_SECONDS}),
    ("failures_last_hour", store.FAILURES_SINCE, {"seconds": FAILURES_WINDOW_SECONDS}),
    (
        "pickup_latency",
        queries.PICKUP_LATENCY,
        {"seconds": PICKUP_WINDOW_SECONDS, "samples": PICKUP_SAMPLES},
    ),
    ("recent_failures", store.RECENT_FAILURES, {"limit": RECENT_FAILURES}),
    ("open_issues", store.OPEN_ISSUES, {"limit": OPEN_ISSUES}),
    ("schedule_state", store.SCHEDULE_STATE, {}),
    ("running_fanouts", store.RUNNING_FANOUTS, {"limit": RUNNING_FANOUTS}),
    ("worker_processes", store.WORKER_PROCESSES, {"limit": WORKERS}),
    ("lane_workers", queries.ENGINE_WORKERS, {"limit": WORKERS}),
    ("queue_pauses", flow_store.ACTIVE_PAUSES, {"queues": None}),
)


async def take(conn: Any, config: Config) -> dict[str, Any]:
    """Everything the dashboard shows, read in one go."""
    timer = _Timer()
    now = datetime.now(UTC)
    counts = await timer.rows(conn, "queue_counts", queries.QUEUE_COUNTS, {})
    queues = sorted({*config.all_queues, *(r["queue"] for r in counts)})
    waits = await timer.rows(conn, "oldest_wait", queries.OLDEST_WAIT, {"queues": queues})
    read = {name: await timer.rows(conn, name, sql, params) for name, sql, params in READS}
    pauses, issues = read["queue_pauses"], read["open_issues"]
    last_minute, failures_hour = read["last_minute"], read["failures_last_hour"]
    latency = read["pickup_latency"][0] if read["pickup_latency"] else {}
    return {
        "taken_at": now,
        "database_ms": round(sum(timer.ms.values()), 2),
        "query_ms": timer.ms,
        "lanes": lanes(
            config, counts, waits, read["worker_processes"], {p["queue"] for p in pauses}
        ),
        "pauses": [
            {"queue": p["queue"], "lane": config.lane_of(p["queue"]), **pause_view(p)}
            for p in pauses
        ],
        "throughput": _minutes(read["throughput"], now),
        # Jobs that succeeded, failed for good, and attempts that failed and will be
        # retried, in the last RATE_WINDOW_SECONDS (a full sliding minute).
        "last_minute": {
            "window_seconds": RATE_WINDOW_SECONDS,
            **{k: int((last_minute[0] if last_minute else {}).get(k) or 0) for k in RATES},
        },
        "failures_last_hour": int(failures_hour[0]["n"]) if failures_hour else 0,
        "pickup_latency": {
            "window_seconds": PICKUP_WINDOW_SECONDS,
            "samples": int(latency.get("samples") or 0),
            "p50_seconds": latency.get("p50_seconds"),
            "p95_seconds": latency.get("p95_seconds"),
            "max_seconds": latency.get("max_seconds"),
        },
        "recent_failures": [dict(r) for r in read["recent_failures"]],
        "open_issues": {
            "total": int(issues[0]["total_open"]) if issues else 0,
            "latest": [{k: v for k, v in r.items() if k != "total_open"} for r in issues],
        },
        "schedule": {
            "next_runs": next_runs(config, read["schedule_state"], now)[:NEXT_RUNS],
            "running_fanouts": [dict(r) for r in read["running_fanouts"]],
        },
        "workers": {
            "processes": [dict(r) for r in read["worker_processes"]],
            "lane_workers": [dict(r) for r in read["lane_workers"]],
        },
    }


def _minutes(rows: list[Any], now: datetime) -> list[dict[str, Any]]:
    """One row per minute of the window, zeros included, oldest first."""
    from datetime import timedelta

    by_minute = {r["minute"].astimezone(UTC): r for r in rows}
    current = now.replace(second=0, microsecond=0)
    result = []
    for back in range(THROUGHPUT_MINUTES - 1, -1, -1):
        minute = current - timedelta(minutes=back)
        row = by_minute.get(minute, {})
        result.append(
            {
                "minute_at": minute,  # the minute's start
                "succeeded": int(row.get("succeeded", 0)),
                "failed": int(row.get("failed", 0)),
                "retried": int(row.get("retried", 0)),
            }
        )
    return result
