"""Producers: ``jobsys.defer`` without a connection (the process's producer pool) vs
PgQueuer's ``enqueue``, one job per call, same database, same run.

- single: 1,000 calls one after another (``jobsys.defer`` vs ``Queries.enqueue`` on
  one asyncpg connection), interleaved in rounds of 100 (the ratio of the totals, and
  the median of the rounds' ratios); then the same again with ``JOBSYS_DB_PREPARE=1``
  (``single_prepared_*``: the pool's connections prepare the defer statement; the
  ``single_*`` row is the default, nothing prepared); and 100 calls the way a
  defer without a connection ran before the pool (a connection opened per call);
- concurrent: 50 producers at once, 20 calls each (jobsys's pool vs an asyncpg pool of
  the same size, PgQueuer's ``AsyncpgPoolDriver``); the peak of connections each
  side held, seen by the server (``pg_stat_activity``);
- batch: ``jobsys.defer_many`` of 10,000 jobs (target 50,000/s) vs PgQueuer's
  ``enqueue`` of 10,000 in one call, ``BATCH_ROUNDS`` pairs in alternating order (the
  medians, the median of the pairs' ratios, jobsys's slowest and fastest round).

jobsys's pool size is its default (``jobsys.db.producers.DEFAULT_MAX_SIZE``). Only
ratios within one run mean anything on a shared machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.depth import _pgqueuer_setup
from bench.live import throwaway_database
from bench.runtime import QUEUES_YAML

SINGLE_CALLS = 1_000
ROUND = 100
PRODUCERS = 50
CALLS_PER_PRODUCER = 20
BATCH = 10_000
BATCH_ROUNDS = 6


async def _connections(url: str, application_name: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name = %s",
            (application_name,),
        )
        row = await cur.fetchone()
    return int(row[0]) if row else 0


async def _peak_while(url: str, application_name: str, work: Any) -> tuple[float, int]:
    """(seconds ``work`` took, the most connections named ``application_name`` seen)."""
    peak = 0
    done = asyncio.Event()

    async def watch() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, await _connections(url, application_name))
            await asyncio.sleep(0.01)

    watcher = asyncio.create_task(watch())
    started = time.perf_counter()
    await work
    seconds = time.perf_counter() - started
    done.set()
    await watcher
    return seconds, peak


async def _single(queries: Any, label: str) -> dict[str, float]:
    """``SINGLE_CALLS`` calls of ``jobsys.defer`` and of PgQueuer's ``enqueue`` (on its
    connection, ``queries``), alternating in rounds of ``ROUND``: their rates as
    ``{label}_jobsys_per_s`` and ``{label}_pgqueuer_per_s``, the ratio of the totals
    (``{label}_ratio``) and the median of the rounds' ratios."""
    import jobsys

    ours = theirs = 0.0
    round_ratios = []
    for _ in range(SINGLE_CALLS // ROUND):
        started = time.perf_counter()
        for _ in range(ROUND):
            await jobsys.defer("bench.noop")
        mine = time.perf_counter() - started
        started = time.perf_counter()
        for _ in range(ROUND):
            await queries.enqueue("bench.noop", None)
        other = time.perf_counter() - started
        ours, theirs = ours + mine, theirs + other
        round_ratios.append(other / mine)
    return {
        f"{label}_jobsys_per_s": round(SINGLE_CALLS / ours, 1),
        f"{label}_pgqueuer_per_s": round(SINGLE_CALLS / theirs, 1),
        f"{label}_ratio": round(theirs / ours, 2),
        # The median of the rounds' ratios: a load spike during a few rounds (other
        # work on a shared machine) moves it less than the ratio of the sums.
        f"{label}_ratio_median_round": round(statistics.median(round_ratios), 2),
    }


async def _measure(url: str) -> dict[str, Any]:
    import asyncpg
    from pgqueuer import AsyncpgDriver, AsyncpgPoolDriver, Queries

    import jobsys
    from jobsys.db import producers
    from jobsys.db.connect import PREPARE_VARIABLE

    results: dict[str, Any] = {}
    # Warm both (first connection, first plan) outside the timings.
    await jobsys.defer("bench.noop")
    conn = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(conn))
    await queries.enqueue("bench.noop", None)

    results.update(await _single(queries, "single"))
    # The same with JOBSYS_DB_PREPARE=1 (README "Connection poolers": a direct
    # connection, or PgBouncer 1.21+ with max_prepared_statements): the pool's new
    # connections prepare the defer statement once. Then back to the default.
    os.environ[PREPARE_VARIABLE] = "1"
    producers.close()
    try:
        await jobsys.defer("bench.noop")  # warm: the new connection, the prepare
        results.update(await _single(queries, "single_prepared"))
    finally:
        del os.environ[PREPARE_VARIABLE]
        producers.close()
    await conn.close()

    # What a defer without a connection cost before the producer pool: a connection
    # opened and closed per call (jobsys.db.connect), the insert on it.
    from jobsys.db.connect import connect

    started = time.perf_counter()
    for _ in range(ROUND):
        async with connect(url) as own:
            await jobsys.defer("bench.noop", connection=own)
    results["single_connection_per_call_per_s"] = round(ROUND / (time.perf_counter() - started), 1)

    async def jobsys_producer() -> None:
        for _ in range(CALLS_PER_PRODUCER):
            await jobsys.defer("bench.noop")

    seconds, peak = await _peak_while(
        url,
        producers.APPLICATION_NAME,
        asyncio.gather(*(jobsys_producer() for _ in range(PRODUCERS))),
    )
    results["concurrent_jobsys_per_s"] = round(PRODUCERS * CALLS_PER_PRODUCER / seconds, 1)
    results["concurrent_jobsys_peak_connections"] = peak

    pool = await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=producers.DEFAULT_MAX_SIZE,
        server_settings={"application_name": "bench-pgqueuer"},
    )
    pool_queries = Queries(AsyncpgPoolDriver(pool))

    async def pgqueuer_producer() -> None:
        for _ in range(CALLS_PER_PRODUCER):
            await pool_queries.enqueue("bench.noop", None)

    seconds, peak = await _peak_while(
        url, "bench-pgqueuer", asyncio.gather(*(pgqueuer_producer() for _ in range(PRODUCERS)))
    )
    await pool.close()
    results["concurrent_pgqueuer_per_s"] = round(PRODUCERS * CALLS_PER_PRODUCER / seconds, 1)
    results["concurrent_pgqueuer_peak_connections"] = peak
    results["concurrent_ratio"] = round(
        results["concurrent_jobsys_per_s"] / results["concurrent_pgqueuer_per_s"], 2
    )
    results["pool_size"] = producers.DEFAULT_MAX_SIZE

    # One batch each used to be the whole measure: on this 2-core machine a batch of
    # 10,000 swings from 19,000 to 42,000 jobs/s between rounds on the same server, so
    # one pair said 35,235 vs 58,111/s for two servers whose statement costs the same
    # (README "Producers"). Now BATCH_ROUNDS pairs, the order alternating; medians.
    conn = await asyncpg.connect(url)
    queries = Queries(AsyncpgDriver(conn))
    ours_rates, theirs_rates = [], []
    for index in range(BATCH_ROUNDS):
        for side in (0, 1) if index % 2 == 0 else (1, 0):
            started = time.perf_counter()
            if side == 0:
                await jobsys.defer_many("bench.noop", [{} for _ in range(BATCH)])
                ours_rates.append(BATCH / (time.perf_counter() - started))
            else:
                await queries.enqueue(["bench.noop"] * BATCH, [None] * BATCH, [0] * BATCH)
                theirs_rates.append(BATCH / (time.perf_counter() - started))
    await conn.close()
    results["batch_jobsys_per_s"] = round(statistics.median(ours_rates), 1)
    results["batch_pgqueuer_per_s"] = round(statistics.median(theirs_rates), 1)
    results["batch_ratio_median_round"] = round(
        statistics.median(o / t for o, t in zip(ours_rates, theirs_rates, strict=True)), 2
    )
    results["batch_jobsys_range"] = [round(min(ours_rates)), round(max(ours_rates))]
    producers.close()
    return results


def run() -> dict[str, Any]:
    import importlib

    from jobsys.config import load
    from jobsys.jobs import defer

    importlib.import_module("bench.runtime_tasks")  # registers bench.noop
    with throwaway_database() as url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config"
        config.mkdir()
        (config / "queues.yaml").write_text(QUEUES_YAML)
        (config / "schedule.yaml").write_text("allow_empty: true\nentries: {}\n")
        os.environ.pop("JOBSYS_PRODUCER_POOL_SIZE", None)
        os.environ.pop("JOBSYS_DB_PREPARE", None)  # the default row: nothing prepared
        asyncio.run(_pgqueuer_setup(url, 0, install=True))
        defer.configure(load(config), url=url)
        try:
            return asyncio.run(_measure(url))
        finally:
            defer.deactivate()


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<40} {value}")
