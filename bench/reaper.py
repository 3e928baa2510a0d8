"""Reaper benchmark: the cost of a quiet pass on a busy table, and how fast a pass
settles the jobs of a dead worker. Runs on a throwaway database of the server named by
JOBSYS_BENCH_DATABASE_URL or JOBSYS_TEST_DATABASE_URL (default: the local server)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import statistics
import time
import uuid
from typing import Any

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
FINISHED_JOBS = 20_000
LIVE_RUNNING_JOBS = 200
DEAD_WORKER_JOBS = 2_000
QUIET_PASSES = 20
PICKUP_SAMPLES = 30
PICKUP_POLL_SECONDS = 60.0  # far above any pickup: only NOTIFY can explain a fast one


def _server_url() -> str:
    return (
        os.environ.get("JOBSYS_BENCH_DATABASE_URL")
        or os.environ.get("JOBSYS_TEST_DATABASE_URL")
        or DEFAULT_URL
    )


async def _measure(url: str) -> dict[str, float]:
    import psycopg
    from psycopg.rows import dict_row

    from jobsys import task
    from jobsys.config import load
    from jobsys.lanes.reaper import reap_once
    from jobsys.settings import from_env

    @task(queue="default", name="bench_reaper.safe", rerun_safe=True)
    def safe() -> None: ...

    @task(queue="default", name="bench_reaper.unsafe")
    def unsafe() -> None: ...

    config = load(from_env().config_dir)
    async with await psycopg.AsyncConnection.connect(
        url, autocommit=True, row_factory=dict_row
    ) as conn:
        live = await conn.execute("INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id")
        live_id = (await live.fetchone())["id"]  # type: ignore[index]
        await conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status) "
            "SELECT 'default', 'bench_reaper.safe', 'succeeded' FROM generate_series(1, %s)",
            (FINISHED_JOBS,),
        )
        await conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id) "
            "SELECT 'default', 'bench_reaper.safe', 'doing', %s FROM generate_series(1, %s)",
            (live_id, LIVE_RUNNING_JOBS),
        )
        await conn.execute("ANALYZE")
        quiet = []
        for _ in range(QUIET_PASSES):
            start = time.perf_counter()
            await reap_once(conn, config)
            quiet.append(time.perf_counter() - start)

        dead = await conn.execute(
            "INSERT INTO procrastinate_workers (last_heartbeat) "
            "VALUES (now() - interval '1 hour') RETURNING id"
        )
        dead_id = (await dead.fetchone())["id"]  # type: ignore[index]
        await conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id, args) "
            "SELECT 'default', CASE WHEN i %% 2 = 0 THEN 'bench_reaper.safe' "
            "ELSE 'bench_reaper.unsafe' END, 'doing', %s, jsonb_build_object('account_id', i) "
            "FROM generate_series(1, %s) AS i",
            (dead_id, DEAD_WORKER_JOBS),
        )
        start = time.perf_counter()
        result = await reap_once(conn, config, limit=DEAD_WORKER_JOBS)
        settle = time.perf_counter() - start
        assert len(result.requeued) + len(result.failed) == DEAD_WORKER_JOBS
        pickup = await _pickup_latencies(url, conn, config)
    pickup.sort()
    return {
        "pickup_p50_ms": statistics.median(pickup) * 1000,
        "pickup_p99_ms": pickup[min(len(pickup) - 1, int(len(pickup) * 0.99))] * 1000,
        "quiet_pass_p50_ms": statistics.median(quiet) * 1000,
        "quiet_pass_max_ms": max(quiet) * 1000,
        "dead_jobs_settled": float(DEAD_WORKER_JOBS),
        "settle_jobs_per_s": DEAD_WORKER_JOBS / settle,
    }


async def _pickup_latencies(url: str, conn: Any, config: Any) -> list[float]:
    """From the start of the reaper pass that requeues a job to that job starting on an
    idle, listening worker (polling every minute, so only the NOTIFY explains it)."""
    from jobsys import task
    from jobsys.lanes.execution import build_engine_app
    from jobsys.lanes.reaper import reap_once

    started: dict[int, float] = {}

    @task(queue="sync", name="bench_reaper.ping", rerun_safe=True, pass_context=True)
    async def ping(context: Any) -> None:
        started[context.job.id] = time.perf_counter()

    app = build_engine_app(url, max_size=4)
    samples = []
    async with app.open_async():
        worker = asyncio.create_task(
            app.run_worker_async(
                queues=["sync"],
                fetch_job_polling_interval=PICKUP_POLL_SECONDS,
                install_signal_handlers=False,
            )
        )
        await asyncio.sleep(1.0)  # listening, first fetch done
        for _ in range(PICKUP_SAMPLES):
            # Left in ``doing`` by a worker whose row is gone.
            cur = await conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, status) "
                "VALUES ('sync', 'bench_reaper.ping', 'doing') RETURNING id"
            )
            job_id = (await cur.fetchone())["id"]
            # Measured from the start of the pass (an upper bound: it includes claiming
            # and requeueing); the job may start before the rest of the pass returns.
            committed = time.perf_counter()
            await reap_once(conn, config)
            deadline = committed + PICKUP_POLL_SECONDS / 2
            while job_id not in started and time.perf_counter() < deadline:
                await asyncio.sleep(0.0005)
            samples.append(started.get(job_id, deadline) - committed)
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    return samples


def run() -> dict[str, float]:
    import psycopg

    from jobsys.db import migrate
    from jobsys.db import url as db_url

    server = _server_url()
    name = f"jobsys_bench_reaper_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = db_url.with_database(server, name)
    logging.disable(logging.CRITICAL)  # one log line per settled job is not the point here
    try:
        migrate.upgrade(url)
        results = asyncio.run(_measure(url))
    finally:
        logging.disable(logging.NOTSET)
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    _print(results)
    return results


def _print(results: dict[str, Any]) -> None:
    print(f"reaper ({FINISHED_JOBS} finished + {LIVE_RUNNING_JOBS} running jobs in the table)")
    for key, value in results.items():
        print(f"  {key:<22} {value:12.1f}")


if __name__ == "__main__":
    run()
