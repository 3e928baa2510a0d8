"""The slow tier (``make chaos-soak``): a long-transaction soak that bloats the job
table while two workers keep a steady load going.

A transaction holding its snapshot open (as a forgotten ``psql`` session or a long
report does) stops VACUUM from removing any dead job row; every job leaves several
behind. The soak defers a steady stream of short jobs for ``CHAOS_SOAK_SECONDS``
(default 120) with that snapshot held for the middle half, then measures: jobs
finished per second before/during/after, dead rows left, the claim's latency at the
end, and fails on any lost, duplicated or stuck job.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path

import psycopg
import pytest
from harness import Worker, create_ledger, defer, ledger, overlaps, query, wait_until, write_config
from rt_support import report

pytestmark = pytest.mark.soak

SOAK_SECONDS = float(os.environ.get("CHAOS_SOAK_SECONDS", "120"))
#: Jobs deferred per second, in bursts of ten.
RATE = 20


def _finished(url: str) -> int:
    return int(
        query(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")[0][0]
    )


def test_long_transaction_bloat_soak(db_url: str, tmp_path: Path) -> None:
    create_ledger(db_url)
    config = write_config(tmp_path, concurrency=8)
    workers = [Worker(n, tmp_path, db_url, db_url, config) for n in ("a", "b")]
    deferred: list[int] = []
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            deferred.extend(defer(db_url, 10, seconds=0.0))
            time.sleep(10 / RATE)

    holder = psycopg.connect(db_url)
    try:
        for w in workers:
            w.wait_ready()
        thread = threading.Thread(target=load, daemon=True)
        thread.start()
        phase = SOAK_SECONDS / 4
        marks = [(time.time(), _finished(db_url))]
        time.sleep(phase)
        marks.append((time.time(), _finished(db_url)))
        holder.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM procrastinate_jobs")  # the snapshot is taken
        time.sleep(2 * phase)
        marks.append((time.time(), _finished(db_url)))
        dead = query(
            db_url,
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'procrastinate_jobs'",
        )[0][0]
        holder.rollback()
        time.sleep(phase)
        stop.set()
        thread.join(30)
        marks.append((time.time(), _finished(db_url)))
        wait_until(lambda: _finished(db_url) == len(deferred), 120, "every deferred job")
        started = time.perf_counter()
        query(
            db_url,
            "SELECT id FROM procrastinate_jobs WHERE status = 'todo' AND queue_name = 'default' "
            "ORDER BY priority DESC, id LIMIT 10 FOR UPDATE SKIP LOCKED",
        )
        claim_ms = (time.perf_counter() - started) * 1000
        runs = ledger(db_url)
        rates = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in itertools.pairwise(marks)]
        report(
            "long-transaction-bloat-soak",
            seconds=SOAK_SECONDS,
            deferred=len(deferred),
            done_per_s_before=rates[0],
            done_per_s_snapshot_held=rates[1],
            done_per_s_after=rates[2],
            dead_rows_while_held=dead,
            claim_query_ms_after=claim_ms,
            lost=len(set(deferred) - {r.job_id for r in runs}),
            duplicates=len(runs) - len({r.job_id for r in runs}),
            worker_exits=sum(not w.alive() for w in workers),
        )
        assert {r.job_id for r in runs} == set(deferred)
        assert len(runs) == len(deferred) and overlaps(runs, {}) == []
        assert all(w.alive() for w in workers)
    finally:
        stop.set()
        holder.close()
        for w in workers:
            w.stop()
