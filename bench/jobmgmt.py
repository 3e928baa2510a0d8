"""Job management at scale (issue 15), in a throwaway database on the bench server:

- search: ``jobs list --arg account_id=42``, ``jobs list --arg-contains`` and
  ``failures list --error TEXT`` over 1,000,000 jobs and 1,000,000 failures: database
  time (EXPLAIN ANALYZE, median of 3), side by side with the same statement with
  index scans turned off (what the query costs without jobsys's indexes);
- bulk cancel: jobs/s of ``jobs cancel --all`` (chunks of 1000) beside Procrastinate's
  own cancel, one ``procrastinate_cancel_job_v1`` call per job;
- bulk delete of 1,000,000 finished jobs in chunks while jobsys's claim runs in a loop
  with ``lock_timeout = 200ms``: jobs/s, the longest chunk transaction, the slowest
  claim, and how many claims hit the lock timeout (target: none).
"""

from __future__ import annotations

import asyncio
import json
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.failures import create_database, drop_database

JOBS = 1_000_000
FAILURES = 1_000_000
ACCOUNTS = 20_000
CANCEL_JOBS = 100_000
PEER_CANCEL_JOBS = 5_000
RESULTS = Path(__file__).resolve().parent / "results"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

SEED_JOBS = """
INSERT INTO procrastinate_jobs (queue_name, task_name, args, status)
SELECT 'default', 'demo.noop',
       jsonb_build_object('account_id', g %% %(accounts)s,
                          'story', 'story ' || (g::bigint * 7919 %% 1000003),
                          'note', md5(g::text)),
       (ARRAY['succeeded','succeeded','succeeded','failed','cancelled'])[1 + g %% 5]
           ::procrastinate_job_status
  FROM generate_series(1, %(jobs)s) g
"""
SEED_EVENTS = """
INSERT INTO procrastinate_events (job_id, type, at)
SELECT id, 'deferred', now() - interval '30 days' FROM procrastinate_jobs
"""
SEED_FAILURES = """
INSERT INTO jobsys_failures (job_id, task, queue, attempt, error_class, message, kind,
                             retryable, occurred_at)
SELECT g, 'app.task_' || (g %% 20), 'default', 1,
       CASE WHEN g %% 1000 = 0 THEN 'app.errors.CheckpointRequired'
            ELSE 'builtins.KeyError' END,
       CASE WHEN g %% 997 = 0 THEN 'Challenge: checkpoint required for account ' || g
            ELSE 'key edge_followed_by ' || md5(g::text) END,
       'runtime', true, now() - g * interval '2 seconds'
  FROM generate_series(1, %(failures)s) g
"""


def seed(url: str) -> float:
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_JOBS, {"accounts": ACCOUNTS, "jobs": JOBS})
        conn.execute(SEED_EVENTS)
        conn.execute(SEED_FAILURES, {"failures": FAILURES})
        conn.execute("VACUUM ANALYZE procrastinate_jobs")
        conn.execute("VACUUM ANALYZE procrastinate_events")
        conn.execute("VACUUM ANALYZE jobsys_failures")
    return round(time.perf_counter() - started, 1)


def _explain(conn: Any, sql: str, params: dict[str, Any], *, indexes: bool) -> float:
    samples = []
    with conn.transaction():
        if not indexes:
            conn.execute("SET LOCAL enable_bitmapscan = off")
            conn.execute("SET LOCAL enable_indexonlyscan = off")
        for _ in range(3):
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0][0]
            samples.append(plan["Planning Time"] + plan["Execution Time"])
    return round(statistics.median(samples), 2)


def search_times(url: str) -> dict[str, dict[str, float]]:
    from jobsys.engine import queries
    from jobsys.failures import store

    base = {
        "queues": None, "task": None, "statuses": None, "account_docs": None, "min_id": None,
        "max_id": None, "since": None, "limit": 50, "arg_docs": None, "arg_contains": None,
    }  # fmt: skip
    cases = {
        "jobs list --arg account_id=42": (
            queries.LIST_JOBS,
            {**base, "arg_docs": ['{"account_id": "42"}', '{"account_id": 42}']},
        ),
        "jobs list --arg-contains 'story 4242'": (
            queries.LIST_JOBS,
            {**base, "arg_contains": "story 4242"},
        ),
        "failures list --error 'checkpoint required'": (
            store.LIST_FAILURES.format(
                columns=store.LIST_COLUMNS, where=store.where_clause({"error": "x"})
            ),
            {"error": "checkpoint required", "limit": 50},
        ),
        "failures list --error CheckpointRequired": (
            store.LIST_FAILURES.format(
                columns=store.LIST_COLUMNS, where=store.where_clause({"error": "x"})
            ),
            {"error": "CheckpointRequired", "limit": 50},
        ),
    }
    out = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, (sql, params) in cases.items():
            out[name] = {
                "db_ms": _explain(conn, sql, params, indexes=True),
                "without_index_db_ms": _explain(conn, sql, params, indexes=False),
            }
    return out


def _settings(url: str) -> Any:
    from jobsys.settings import Settings

    return Settings(
        database_url=url, home=Path("/tmp/jobsys-bench-jobmgmt"), config_dir=CONFIG_DIR,
        operator="bench",
    )  # fmt: skip


def bulk_cancel(url: str) -> dict[str, float]:
    from jobsys.jobs.browser import JobFilters
    from jobsys.jobs.bulk import BulkRequest, bulk_action

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'sync', 'demo.noop', jsonb_build_object('n', g) "
            "FROM generate_series(1, %s) g",
            (CANCEL_JOBS,),
        )
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'profiles', 'demo.noop', jsonb_build_object('n', g) "
            "FROM generate_series(1, %s) g",
            (PEER_CANCEL_JOBS,),
        )
        conn.execute("ANALYZE procrastinate_jobs")
        request = BulkRequest(action="queues_purge", filters=JobFilters(queues=("sync",)))
        report = asyncio.run(bulk_action(_settings(url), request))
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT id FROM procrastinate_jobs WHERE queue_name = 'profiles' "
                "AND status = 'todo'"
            )
        ]
        started = time.perf_counter()
        for job_id in ids:
            conn.execute("SELECT procrastinate_cancel_job_v1(%s, false, false)", (job_id,))
        peer_seconds = time.perf_counter() - started
    done = report["done"]["cancelled"]
    return {
        "jobs": done,
        "jobs_per_s": round(done / report["seconds"], 1),
        "longest_chunk_ms": round(report["max_chunk_seconds"] * 1000, 1),
        "procrastinate_cancel_one_by_one_jobs_per_s": round(len(ids) / peer_seconds, 1),
    }


def bulk_delete(url: str) -> dict[str, float]:
    from jobsys.engine.queries import CLAIM_JOBS
    from jobsys.jobs.browser import JobFilters
    from jobsys.jobs.bulk import BulkRequest, bulk_action

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'default', 'demo.noop', '{}' FROM generate_series(1, 20000)"
        )
    stop = threading.Event()
    claims: list[float] = []
    timeouts: list[str] = []

    def claimer() -> None:
        params = {"queues": ["default"], "worker_id": None, "limit": 1}
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '200ms'")
            while not stop.is_set():
                began = time.monotonic()
                try:
                    conn.execute("BEGIN")
                    conn.execute(CLAIM_JOBS, params)
                    conn.execute("ROLLBACK")
                    claims.append(time.monotonic() - began)
                except psycopg.errors.LockNotAvailable as exc:
                    conn.execute("ROLLBACK")
                    timeouts.append(str(exc))
                time.sleep(0.005)

    thread = threading.Thread(target=claimer)
    thread.start()
    try:
        request = BulkRequest(
            action="jobs_delete", filters=JobFilters(), before="7d", everything=True
        )
        report = asyncio.run(bulk_action(_settings(url), request))
    finally:
        stop.set()
        thread.join()
    done = report["done"]["deleted"]
    return {
        "jobs": done,
        "jobs_per_s": round(done / report["seconds"], 1),
        "longest_chunk_ms": round(report["max_chunk_seconds"] * 1000, 1),
        "claims": len(claims),
        "slowest_claim_ms": round(max(claims, default=0) * 1000, 1),
        "median_claim_ms": round(statistics.median(claims) * 1000, 2) if claims else 0.0,
        "claims_over_200ms_lock_wait": len(timeouts),
    }


def run() -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    admin, url = create_database()
    try:
        seconds = seed(url)
        search = search_times(url)
        cancel = bulk_cancel(url)
        delete = bulk_delete(url)
    finally:
        drop_database(admin, url)
    detail = {
        "rows": {"jobs": JOBS, "failures": FAILURES, "seed_seconds": seconds},
        "search": search,
        "bulk_cancel": cancel,
        "bulk_delete": delete,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "jobmgmt.json").write_text(json.dumps(detail, indent=2))
    print(json.dumps(detail, indent=2))
    return {
        "worst_search_db_ms": max(v["db_ms"] for v in search.values()),
        "bulk_cancel_jobs_per_s": cancel["jobs_per_s"],
        "bulk_delete_jobs_per_s": delete["jobs_per_s"],
        "bulk_delete_longest_chunk_ms": delete["longest_chunk_ms"],
        "claims_over_200ms_lock_wait": delete["claims_over_200ms_lock_wait"],
    }
