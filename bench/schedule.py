"""Fan-out of 100,000 accounts (batch 1,000) side by side with Procrastinate's own batch
defer of the same 100,000 jobs, in the same run, on a throwaway database.

- ``fanout``: from the tick (``start_fanout``) to the commit of the last batch, each
  batch run as a worker runs it (``run_batch`` with the continuation's cursor);
- ``raw``: ``JobManager.batch_defer_jobs_async`` in chunks of 1,000 (the same batch).

Rates are jobs per second; the best of ``REPEATS`` alternating rounds is kept (the
machine is shared). Memory: the Python heap's peak (tracemalloc) during each, and the
fan-out's peak again at a tenth of the rows to show it does not grow with them.
"""

from __future__ import annotations

import asyncio
import os
import time
import tracemalloc
import uuid
from typing import Any

ACCOUNTS = 100_000
BATCH = 1_000
REPEATS = 1
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
ITEM_TASK = "bench.process_account"


def _server_url() -> str:
    return (
        os.environ.get("JOBSYS_BENCH_DATABASE_URL")
        or os.environ.get("JOBSYS_TEST_DATABASE_URL")
        or DEFAULT_URL
    )


async def _reset(conn: Any, accounts: int) -> None:
    await conn.execute("TRUNCATE procrastinate_jobs, jobsys_fanout_runs RESTART IDENTITY CASCADE")
    await conn.execute("DROP TABLE IF EXISTS bench_accounts")
    await conn.execute("CREATE TABLE bench_accounts (id bigint PRIMARY KEY, active boolean)")
    await conn.execute(
        "INSERT INTO bench_accounts SELECT i, true FROM generate_series(1, %s) i", (accounts,)
    )
    await conn.execute("VACUUM ANALYZE bench_accounts")


async def _fanout(url: str, accounts: int) -> dict[str, float]:
    from jobsys.db.connect import connect
    from jobsys.schedule.fanout import FanoutSource, run_batch, start_fanout

    async with connect(url) as conn:
        await _reset(conn, accounts)
        tracemalloc.start()
        start = time.perf_counter()
        started = await start_fanout(
            conn,
            entry="bench",
            source=FanoutSource("bench_accounts", "id", "active"),
            task=ITEM_TASK,
            queue="sync",
            batch_size=BATCH,
        )
        assert started.run_id is not None
        cursor: int | None = None
        batches = 0
        while True:
            result = await run_batch(conn, started.run_id, cursor)
            batches += 1
            if result.finished:
                break
            cursor = result.cursor
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        cur = await conn.execute(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE task_name = %s", (ITEM_TASK,)
        )
        row = await cur.fetchone()
        assert row is not None and row["n"] == accounts, row
    return {"seconds": elapsed, "batches": batches, "peak_kib": peak / 1024}


async def _raw(url: str) -> dict[str, float]:
    import procrastinate
    from procrastinate.jobs import Job

    from jobsys.db.connect import connect

    async with connect(url) as conn:
        await _reset(conn, 0)
    app = procrastinate.App(
        connector=procrastinate.PsycopgConnector(conninfo=url, min_size=1, max_size=2)
    )
    async with app.open_async():
        tracemalloc.start()
        start = time.perf_counter()
        for first in range(1, ACCOUNTS + 1, BATCH):
            jobs = [
                Job(
                    id=None,
                    queue="sync",
                    lock=None,
                    queueing_lock=None,
                    task_name=ITEM_TASK,
                    task_kwargs={"account_id": i},
                )
                for i in range(first, min(first + BATCH, ACCOUNTS + 1))
            ]
            await app.job_manager.batch_defer_jobs_async(jobs)
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return {"seconds": elapsed, "peak_kib": peak / 1024}


async def _main(url: str) -> dict[str, Any]:
    raws, fanouts = [], []
    for _ in range(REPEATS):
        raws.append(await _raw(url))
        fanouts.append(await _fanout(url, ACCOUNTS))
    small = await _fanout(url, ACCOUNTS // 10)
    raw = min(raws, key=lambda r: r["seconds"])
    fan = min(fanouts, key=lambda r: r["seconds"])
    raw_rate = ACCOUNTS / raw["seconds"]
    fan_rate = ACCOUNTS / fan["seconds"]
    return {
        "accounts": ACCOUNTS,
        "batch_size": BATCH,
        "fanout_seconds": round(fan["seconds"], 3),
        "fanout_jobs_per_s": round(fan_rate),
        "fanout_batches": fan["batches"],
        "raw_batch_defer_seconds": round(raw["seconds"], 3),
        "raw_batch_defer_jobs_per_s": round(raw_rate),
        "ratio_to_raw": round(fan_rate / raw_rate, 2),
        "target_ratio": 0.8,
        "fanout_peak_kib": round(fan["peak_kib"], 1),
        "fanout_peak_kib_at_10k_rows": round(small["peak_kib"], 1),
        "raw_peak_kib": round(raw["peak_kib"], 1),
    }


def run() -> dict[str, Any]:
    """Run the benchmark on a throwaway database; return the numbers."""
    import psycopg

    from jobsys.db import migrate
    from jobsys.db.url import with_database

    server = _server_url()
    name = f"jobsys_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    try:
        migrate.upgrade(url)
        return asyncio.run(_main(url))
    finally:
        with psycopg.connect(server, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    import json

    print(json.dumps(run(), indent=2))
