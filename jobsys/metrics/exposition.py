"""Prometheus text exposition of jobsys's state (``jobsys metrics`` and the worker endpoint).

:func:`collect` reads the database (queries of :mod:`jobsys.live.store`) into metric
families; :func:`render` writes the text format (version 0.0.4) without needing
``prometheus_client``. Every value is a gauge read from the tables, so any worker
(or the CLI) can serve it and they all agree.

Jobs are counted where it is cheap and meaningful: waiting, scheduled and running
jobs per queue (exact, through the active-jobs index), and jobs finished in the
last five minutes per outcome (from Procrastinate's events). Counting every
finished job ever kept would scan the whole table on each scrape.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobsys.engine import queries
from jobsys.flow import store as flow_store
from jobsys.live import store

if TYPE_CHECKING:
    from jobsys.config import Config

FINISHED_WINDOW_MINUTES = 5
FAILURES_WINDOW_SECONDS = 3600
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class Family:
    name: str
    help: str
    samples: list[tuple[dict[str, str], float]] = field(default_factory=list)
    type: str = "gauge"

    def add(self, value: float | None, **labels: Any) -> None:
        if value is None:
            return
        self.samples.append(({k: str(v) for k, v in labels.items()}, float(value)))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def render(families: list[Family]) -> str:
    lines: list[str] = []
    for family in families:
        lines.append(f"# HELP {family.name} {family.help}")
        lines.append(f"# TYPE {family.name} {family.type}")
        for labels, value in family.samples:
            label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
            name = f"{family.name}{{{label_text}}}" if label_text else family.name
            lines.append(f"{name} {_number(value)}")
    return "\n".join(lines) + "\n"


async def collect(conn: Any, config: Config) -> list[Family]:
    from jobsys import cron
    from jobsys.failures.models import KINDS
    from jobsys.issues.models import ISSUE_KINDS

    started = time.perf_counter()
    counts = {r["queue"]: r for r in await store.fetch_all(conn, queries.QUEUE_COUNTS)}
    queues = sorted({*config.all_queues, *counts})
    waits = {
        r["queue"]: r["oldest_wait_seconds"]
        for r in await store.fetch_all(conn, queries.OLDEST_WAIT, {"queues": queues})
    }
    finished = await store.fetch_all(conn, queries.THROUGHPUT, {"minutes": FINISHED_WINDOW_MINUTES})
    failures = {
        r["kind"]: r["failures"]
        for r in await store.fetch_all(
            conn, store.FAILURES_BY_KIND, {"seconds": FAILURES_WINDOW_SECONDS}
        )
    }
    issues = {
        r["kind"]: r["issues"] for r in await store.fetch_all(conn, store.OPEN_ISSUES_BY_KIND)
    }
    processes = await store.fetch_all(conn, store.WORKER_PROCESSES, {"limit": 1000})
    lane_workers = await store.fetch_all(conn, queries.ENGINE_WORKERS, {"limit": 1000})
    states = {r["name"]: r for r in await store.fetch_all(conn, store.SCHEDULE_STATE)}
    paused_queues = {r["queue"] for r in await flow_store.active_pauses(conn)}
    database_seconds = time.perf_counter() - started

    jobs = Family("jobsys_jobs", "Jobs waiting (due), scheduled (later) and running, per queue.")
    oldest = Family(
        "jobsys_queue_oldest_wait_seconds", "How long the oldest due job of a queue has waited."
    )
    paused = Family(
        "jobsys_queue_paused", "1 while a queue is paused (`jobsys queues pause`), else 0."
    )
    for queue in queues:
        row = counts.get(queue, {})
        lane = config.lane_of(queue) or "none"
        for status, key in (
            ("waiting", "waiting"),
            ("scheduled", "scheduled"),
            ("running", "running"),
        ):
            jobs.add(int(row.get(key, 0)), queue=queue, lane=lane, status=status)
        oldest.add(waits.get(queue) or 0.0, queue=queue, lane=lane)
        paused.add(1 if queue in paused_queues else 0, queue=queue, lane=lane)

    done = Family(
        "jobsys_jobs_finished_recent",
        f"Job attempts finished in the last {FINISHED_WINDOW_MINUTES} minutes, by outcome.",
    )
    for status in ("succeeded", "failed", "retried"):
        done.add(sum(int(r[status]) for r in finished), status=status)

    fail = Family(
        "jobsys_failures_recent", "Failed attempts captured in the last hour, by failure kind."
    )
    for kind in KINDS:
        fail.add(int(failures.get(kind, 0)), kind=kind)

    open_issues = Family("jobsys_open_issues", "Open issues, by kind.")
    for kind in ISSUE_KINDS:
        open_issues.add(int(issues.get(kind, 0)), kind=kind)

    heartbeat = Family(
        "jobsys_worker_heartbeat_age_seconds",
        "Seconds since each running jobsys worker process last sent a heartbeat.",
    )
    for row in processes:
        heartbeat.add(
            row["heartbeat_age_seconds"],
            worker=row["id"],
            hostname=row["hostname"],
            lanes=",".join(row["lanes"] or []),
            status=row["status"],
        )
    lane_heartbeat = Family(
        "jobsys_lane_worker_heartbeat_age_seconds",
        "Seconds since each lane worker (one per lane per process) last beat.",
    )
    for row in lane_workers:
        lane_heartbeat.add(row["heartbeat_age_seconds"], worker_id=row["id"])

    lag = Family(
        "jobsys_schedule_lag_seconds",
        "How far each schedule entry is behind its latest due fire time (0: up to date).",
    )
    next_run = Family(
        "jobsys_schedule_next_run_timestamp_seconds", "When each schedule entry fires next."
    )
    now = datetime.now(UTC)
    for name, entry in sorted(config.schedule.entries.items()):
        state = states.get(name, {})
        if not entry.enabled or state.get("paused"):
            continue
        try:
            tz = cron.timezone_of(config.schedule_timezone(entry))
            due = cron.previous_fire(entry.cron, now, tz)
            upcoming = cron.next_fire(entry.cron, now, tz)
        except cron.CronInvalid:
            continue
        next_run.add(upcoming.timestamp(), entry=name)
        high_water = state.get("high_water")
        if high_water is not None:
            lag.add(max(0.0, (due - high_water).total_seconds()), entry=name)

    scrape = Family(
        "jobsys_metrics_database_seconds", "Database time spent collecting these metrics."
    )
    scrape.add(round(database_seconds, 6))
    return [
        jobs, oldest, paused, done, fail, open_issues, heartbeat, lane_heartbeat, lag,
        next_run, scrape
    ]  # fmt: skip
