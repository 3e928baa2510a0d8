"""Live operations benchmarks: event latency, burst coalescing, dashboard cost at 1M jobs.

Each part runs in its own throwaway database on the server named by
``JOBSYS_BENCH_DATABASE_URL`` / ``JOBSYS_TEST_DATABASE_URL`` (default: the local
server), dropped afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LATENCY_EVENTS = 300
BURST_JOBS = 10_000
SNAPSHOT_JOBS = 1_000_000
SNAPSHOT_RUNS = 10


def admin_url() -> str:
    return (
        os.environ.get("JOBSYS_BENCH_DATABASE_URL")
        or os.environ.get("JOBSYS_TEST_DATABASE_URL")
        or DEFAULT_URL
    )


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    import psycopg

    from jobsys.db import migrate
    from jobsys.db.url import with_database

    admin = admin_url()
    name = f"jobsys_bench_live_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(admin, name)
    try:
        migrate.upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def event_latency(url: str) -> dict[str, float]:
    """Commit of a NOTIFY to the line printed by ``jobsys events --json``."""
    import psycopg

    from jobsys.live.publish import publish

    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(JOBSYS_DATABASE_URL=url, JOBSYS_CONFIG_DIR=str(REPO / "config"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobsys", "events", "--json", "--topic", "jobs_changed"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    received: dict[int, float] = {}
    ready = threading.Event()
    done = threading.Event()

    def read_out() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            received[json.loads(line)["data"]["seq"]] = time.perf_counter()
            if len(received) == LATENCY_EVENTS:
                done.set()

    def read_err() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            if "listening" in line:
                ready.set()

    threading.Thread(target=read_out, daemon=True).start()
    threading.Thread(target=read_err, daemon=True).start()
    committed: dict[int, float] = {}

    async def send() -> None:
        async with await psycopg.AsyncConnection.connect(url) as conn:
            for seq in range(LATENCY_EVENTS):
                async with conn.transaction():
                    await publish(conn, "jobs_changed", {"seq": seq})
                committed[seq] = time.perf_counter()
                await asyncio.sleep(0.005)

    try:
        if not ready.wait(30):
            raise RuntimeError("jobsys events did not start")
        asyncio.run(send())
        done.wait(30)
    finally:
        proc.terminate()
        proc.wait(10)
    latencies = [(received[s] - committed[s]) * 1000 for s in committed if s in received]
    return {
        "events": len(committed),
        "received": len(latencies),
        "p50_ms": round(statistics.median(latencies), 2),
        "p99_ms": round(percentile(latencies, 0.99), 2),
        "max_ms": round(max(latencies), 2),
    }


async def middleware_burst(
    url: str,
    jobs: int,
    *,
    rate: int,
    task_kwargs: dict[str, Any],
    pause_every: int,
    pause_seconds: float,
) -> tuple[list[str], float, float]:
    """``jobs`` outcomes through the live middleware, with a real flusher at ``rate``
    NOTIFYs per second: the payloads a listener received, the burst's seconds and the
    seconds until the final flush. Shared with the test that checks the coalescing."""
    import psycopg
    from procrastinate import jobs as pjobs
    from procrastinate.job_context import JobContext

    from jobsys.lanes.execution import build_engine_app
    from jobsys.live import coalesce
    from jobsys.live.middleware import live_events
    from jobsys.live.publish import CHANNEL
    from jobsys.live.services import EventFlusher

    shared = coalesce.Coalescer(max_per_second=rate)
    middleware = live_events(shared)
    listener = await psycopg.AsyncConnection.connect(url, autocommit=True)
    await listener.execute(f"LISTEN {CHANNEL}")
    app = build_engine_app(url)
    async with app.open_async():
        stop = asyncio.Event()
        flusher = asyncio.create_task(EventFlusher(rate, coalescer=shared).run(app, stop))

        async def ok() -> None:
            return None

        start = time.monotonic()
        for job_id in range(1, jobs + 1):
            job = pjobs.Job(
                id=job_id,
                queue="sync",
                lock=None,
                queueing_lock=None,
                task_name="demo.process_account",
                task_kwargs=task_kwargs,
            )
            context = JobContext(
                app=app, job=job, start_timestamp=time.time(), abort_reason=lambda: None
            )
            await middleware(ok, context, None)
            if job_id % pause_every == 0:
                await asyncio.sleep(pause_seconds)  # the worker yields between jobs
        burst_seconds = time.monotonic() - start
        stop.set()
        await flusher
        elapsed = time.monotonic() - start
    payloads = [n.payload async for n in listener.notifies(timeout=1.0)]
    await listener.close()
    return payloads, burst_seconds, elapsed


def burst(url: str) -> dict[str, float]:
    """10,000 job outcomes through the live middleware: NOTIFYs per topic per second."""
    texts, burst_seconds, _ = asyncio.run(
        middleware_burst(
            url, BURST_JOBS, rate=10, task_kwargs={}, pause_every=100, pause_seconds=0.005
        )
    )
    jobs = [p for p in map(json.loads, texts) if p["topic"] == "jobs_changed"]
    return {
        "jobs": BURST_JOBS,
        "burst_seconds": round(burst_seconds, 3),
        "notifications": len(jobs),
        "notifications_per_second": round(len(jobs) / max(burst_seconds, 1e-9), 2),
        "succeeded_counted": sum(p.get("succeeded", 0) for p in jobs),
        "max_payload_bytes": max(len(json.dumps(p)) for p in jobs),
    }


def snapshot_cost(url: str) -> dict[str, Any]:
    """Dashboard snapshot, metrics and jobs-list database time with 1,000,000 jobs."""
    import psycopg

    from bench.live_data import populate
    from jobsys.config import load
    from jobsys.db.connect import connect
    from jobsys.engine import queries
    from jobsys.live import snapshot, store
    from jobsys.metrics import exposition as metrics

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        populate(conn, SNAPSHOT_JOBS)
    populate_seconds = time.perf_counter() - started
    config = load(REPO / "config")

    async def measure() -> dict[str, Any]:
        async with connect(url) as conn:
            totals, worst = [], {}
            for _ in range(SNAPSHOT_RUNS):
                snap = await snapshot.take(conn, config)
                totals.append(snap["database_ms"])
                for name, ms in snap["query_ms"].items():
                    worst[name] = max(worst.get(name, 0.0), ms)
            t = time.perf_counter()
            await metrics.collect(conn, config)
            metrics_ms = (time.perf_counter() - t) * 1000
            params = {
                "queues": None,
                "task": None,
                "statuses": None,
                "account_docs": None,
                "min_id": None,
                "since": None,
                "limit": 50,
            }
            t = time.perf_counter()
            await store.fetch_all(conn, queries.LIST_JOBS, params)
            list_ms = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            await store.fetch_all(
                conn, queries.LIST_JOBS, {**params, "statuses": ["failed"], "queues": ["profiles"]}
            )
            list_filtered_ms = (time.perf_counter() - t) * 1000
        return {
            "jobs": SNAPSHOT_JOBS,
            "populate_seconds": round(populate_seconds, 1),
            "snapshot_median_ms": round(statistics.median(totals), 2),
            "snapshot_max_ms": round(max(totals), 2),
            "slowest_query_ms": max(worst.values()),
            "per_query_max_ms": worst,
            "metrics_ms": round(metrics_ms, 2),
            "jobs_list_ms": round(list_ms, 2),
            "jobs_list_failed_profiles_ms": round(list_filtered_ms, 2),
        }

    return asyncio.run(measure())


def run() -> dict[str, float]:
    """Headline numbers (flat, for the bench table); details go to results/live.json."""
    details: dict[str, Any] = {}
    with throwaway_database() as url:
        details["event_latency"] = event_latency(url)
        details["burst"] = burst(url)
    with throwaway_database() as url:
        details["dashboard_1m_jobs"] = snapshot_cost(url)
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "live.json").write_text(json.dumps(details, indent=2))
    latency, burst_, snap = (
        details["event_latency"],
        details["burst"],
        details["dashboard_1m_jobs"],
    )
    return {
        "event_latency_p50_ms": latency["p50_ms"],
        "event_latency_p99_ms": latency["p99_ms"],
        "burst_10k_notifications": burst_["notifications"],
        "burst_notifications_per_s": burst_["notifications_per_second"],
        "snapshot_1m_median_ms": snap["snapshot_median_ms"],
        "snapshot_1m_max_ms": snap["snapshot_max_ms"],
        "metrics_1m_ms": snap["metrics_ms"],
        "jobs_list_1m_ms": snap["jobs_list_ms"],
    }


if __name__ == "__main__":
    for key, value in run().items():
        print(f"live         {key:<28} {value:10.3f}")
