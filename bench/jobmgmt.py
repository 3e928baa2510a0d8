"""Job management at scale (issue 15), in a throwaway database on the bench server:

- search: ``jobs list --arg account_id=42``, ``failures list --error TEXT`` and
  ``retry --all --error TEXT`` over 1,000,000 jobs and 1,000,000 failures: database
  time of every statement the command runs (EXPLAIN ANALYZE, median of 3 each), side by
  side with index scans turned off and, for ``--error``, with the plain ordered query
  it ran before; ``jobs list --arg-contains`` rare, common and absent, after the
  worker's search-index pass copied every job (its copy rate reported), with 10,000
  jobs left in the not-yet-indexed tail, beside the row-by-row filter it ran before;
- bulk cancel: jobs/s of ``jobs cancel --all`` (chunks of 1000) beside Procrastinate's
  own cancel, one ``procrastinate_cancel_job_v1`` call per job;
- bulk delete of 1,000,000 finished jobs in chunks by the real ``jobsys jobs delete
  --all --before 7d``, interrupted (SIGINT) half way and run again, while jobsys's claim
  runs in a loop with ``lock_timeout = 200ms``: jobs/s over both runs, that the rerun
  finished the rest, its longest chunk transaction, the slowest claim, and how many
  claims hit the lock timeout (target: none; the issue's "no lock held longer than
  200 ms", at its 1,000,000 rows: tests/integration/test_bulk_at_scale.py does 100,000).
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
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
#: Jobs taken as deferred after the last search-index pass (read row by row).
SEARCH_TAIL = 10_000
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


def index_all(url: str) -> dict[str, float]:
    """The worker's search-index pass, back to back until every job is copied (the
    first pass only records the stretch), then ANALYZE: jobs/s of the copy."""
    from jobsys.jobs.search_index import index_pass

    async def passes() -> tuple[int, float]:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            started, copied = time.perf_counter(), 0
            while copied < JOBS and time.perf_counter() - started < 1800:
                result = await index_pass(conn)
                copied += result.copied
                if not result.copied:  # a transaction of the recorded stretch still runs
                    await asyncio.sleep(0.1)
            return copied, time.perf_counter() - started

    copied, seconds = asyncio.run(passes())
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("VACUUM ANALYZE jobsys_job_search")
    return {
        "copied": copied,
        "seconds": round(seconds, 1),
        "jobs_per_s": round(copied / seconds, 1),
    }


def _explain(conn: Any, sql: str, params: dict[str, Any], *, indexes: bool = True) -> float:
    samples = []
    with conn.transaction():
        if not indexes:
            conn.execute("SET LOCAL enable_bitmapscan = off")
            conn.execute("SET LOCAL enable_indexonlyscan = off")
        for _ in range(3):
            plan = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()[0][0]
            samples.append(plan["Planning Time"] + plan["Execution Time"])
    return round(statistics.median(samples), 2)


def _statements(sql_params: list[tuple[str, dict[str, Any]]], conn: Any, **kw: Any) -> float:
    """Database time of every statement a command runs, each the median of 3."""
    return round(sum(_explain(conn, sql, params, **kw) for sql, params in sql_params), 2)


def search_times(url: str) -> dict[str, dict[str, float]]:
    """Each command's statements as it runs them (the list and, for ``failures list``,
    its capped total; for ``retry --all``, its count and first chunk), database time.
    Peers: the same statements with index scans off (what jobsys's indexes buy) and,
    for ``--error``, the plain ``ORDER BY ... LIMIT`` it ran before the BY_TEXT shape.
    ``--arg-contains``: the tail query (the last 10,000 jobs taken as not indexed yet)
    and the indexed one, as ``jobs list`` runs them; peer: the row-by-row filter over
    every job (``row_by_row_db_ms``: what the search costs without the index; with the
    row filter's JSON-text shortcut since it has one)."""
    from jobsys.config import load as load_config_files
    from jobsys.engine import queries
    from jobsys.failures import store
    from jobsys.failures.filters import failure_filters
    from jobsys.failures.service import COUNT_CAP
    from jobsys.retry import store as retry_store
    from jobsys.retry.service import DEFAULT_BULK_LIMIT

    base = {
        "queues": None, "task": None, "statuses": None, "account_docs": None, "min_id": None,
        "max_id": None, "since": None, "limit": 50, "arg_docs": None, "arg_contains": None,
    }  # fmt: skip
    arg = {**base, "arg_docs": ['{"account_id": "42"}', '{"account_id": 42}']}
    chunk = load_config_files(CONFIG_DIR).queues.retry.bulk_chunk_size

    def failures_list(text: str, shape: str = "cli") -> list[tuple[str, dict[str, Any]]]:
        params = store.text_params({"error": text, "limit": 50})
        where = store.where_clause(params)
        listed = (
            store.list_query(params)
            if shape == "cli"
            else store.PLAIN_ORDERED.format(
                columns=store.LIST_COLUMNS, where=where, order=store.LIST_ORDER
            )
        )
        total = store.COUNT_FAILURES.format(where=where)
        return [(total, {**params, "cap": COUNT_CAP + 1}), (listed, params)]

    def retry_all(text: str) -> list[tuple[str, dict[str, Any]]]:
        where, params = retry_store.filter_where(failure_filters(error=text))
        count = retry_store.COUNT_MATCHING.format(where=where)
        first = store.ordered("f.id", f"{where} AND f.id > %(after)s", params, "id", "f.id")
        chunk_params = store.text_params({**params, "after": 0, "limit": chunk})
        return [(count, {**params, "limit": DEFAULT_BULK_LIMIT}), (first, chunk_params)]

    indexed = {
        "jobs list --arg account_id=42": [(queries.LIST_JOBS, arg)],
        "failures list --error 'checkpoint required'": failures_list("checkpoint required"),
        "failures list --error CheckpointRequired": failures_list("CheckpointRequired"),
        "failures list --error KeyError": failures_list("KeyError"),
        "retry --all --error CheckpointRequired": retry_all("CheckpointRequired"),
    }
    with psycopg.connect(url, autocommit=True) as conn:
        newest = conn.execute("SELECT max(id) FROM procrastinate_jobs").fetchone()[0]
    contains = {
        f"jobs list --arg-contains {text!r} ({kind})": {
            **base,
            "arg_contains": text,
            "search_cursor": newest - SEARCH_TAIL,
        }
        for text, kind in (("story 4242", "rare"), ("story 1", "common"), ("no-such", "none"))
    }
    out: dict[str, dict[str, float]] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, statements in indexed.items():
            out[name] = {
                "db_ms": _statements(statements, conn),
                "without_index_db_ms": _statements(statements, conn, indexes=False),
            }
            if name.startswith("failures list --error"):
                text = name.split("--error ", 1)[1].strip("'")
                out[name]["plain_order_db_ms"] = _statements(failures_list(text, "plain"), conn)
        for name, params in contains.items():
            out[name] = {
                "db_ms": _statements(
                    [
                        (queries.LIST_JOBS_CONTAINING_TAIL, params),
                        (queries.LIST_JOBS_CONTAINING, params),
                    ],
                    conn,
                ),
                "row_by_row_db_ms": _statements([(queries.LIST_JOBS, params)], conn),
            }
    return out


def _settings(url: str) -> Any:
    from jobsys.settings import Settings

    return Settings(
        database_url=url, home=Path("/tmp/jobsys-bench-jobmgmt"), config_dir=CONFIG_DIR,
        operator="bench",
    )  # fmt: skip


def bulk_cancel(url: str) -> dict[str, float]:
    from jobsys.config.application import load_config
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
        settings = _settings(url)
        report = asyncio.run(bulk_action(settings, load_config(settings), request))
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


def bulk_delete(url: str) -> dict[str, Any]:
    from jobsys.engine.queries import CLAIM_JOBS

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
    delete = ["jobs", "delete", "--all", "--before", "7d", "--yes", "--json"]
    try:
        started = time.perf_counter()
        first = _jobsys(url, *delete)
        with psycopg.connect(url, autocommit=True) as conn:
            while first.poll() is None and _deleted_so_far(conn) < JOBS // 2:
                time.sleep(0.2)
        first.send_signal(signal.SIGINT)  # Ctrl-C half way
        first.communicate(timeout=120)
        first_seconds = time.perf_counter() - started
        with psycopg.connect(url, autocommit=True) as conn:
            interrupted_at = _deleted_so_far(conn)
        started = time.perf_counter()
        second = _jobsys(url, *delete)
        out, err = second.communicate(timeout=3600)
        second_seconds = time.perf_counter() - started
        assert second.returncode == 0, err
        report = json.loads(out)
    finally:
        stop.set()
        thread.join()
    with psycopg.connect(url, autocommit=True) as conn:
        left = conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE queue_name = 'default' "
            "AND status <> 'todo'"
        ).fetchone()[0]
    done = interrupted_at + report["done"]["deleted"]
    return {
        "jobs": done,
        "jobs_per_s": round(done / (first_seconds + second_seconds), 1),
        "interrupted_exit_code": first.returncode,
        "deleted_before_interrupt": interrupted_at,
        "deleted_by_rerun": report["done"]["deleted"],
        "finished_left": left,
        "rerun_longest_chunk_ms": round(report["max_chunk_seconds"] * 1000, 1),
        "claims": len(claims),
        "slowest_claim_ms": round(max(claims, default=0) * 1000, 1),
        "median_claim_ms": round(statistics.median(claims) * 1000, 2) if claims else 0.0,
        "claims_over_200ms_lock_wait": len(timeouts),
    }


def _jobsys(url: str, *args: str) -> subprocess.Popen[str]:
    """The real ``jobsys`` command, as an operator runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(
        JOBSYS_DATABASE_URL=url,
        JOBSYS_CONFIG_DIR=str(CONFIG_DIR),
        JOBSYS_HOME="/tmp/jobsys-bench-jobmgmt",
        JOBSYS_OPERATOR="bench",
    )
    cmd, pipe = [sys.executable, "-m", "jobsys", *args], subprocess.PIPE
    return subprocess.Popen(cmd, env=env, stdout=pipe, stderr=pipe, text=True, preexec_fn=_ctrl_c)


def _ctrl_c() -> None:
    """In the child: a bench started in the background (``nohup ... &``) ignores SIGINT,
    and the child would inherit that; give it Ctrl-C back (the interrupt is real)."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _deleted_so_far(conn: Any) -> int:
    """The delete's own progress: its audit row's counts, updated chunk by chunk."""
    row = conn.execute(
        "SELECT coalesce(sum((counts->>'deleted')::bigint), 0) FROM jobsys_bulk_actions "
        "WHERE action = 'jobs_delete'"
    ).fetchone()
    return int(row[0])


def run() -> dict[str, Any]:
    import logging

    logging.disable(logging.WARNING)
    admin, url = create_database()
    try:
        seconds = seed(url)
        indexing = index_all(url)
        search = search_times(url)
        cancel = bulk_cancel(url)
        delete = bulk_delete(url)
    finally:
        drop_database(admin, url)
    detail = {
        "rows": {"jobs": JOBS, "failures": FAILURES, "seed_seconds": seconds},
        "search_index": indexing,
        "search": search,
        "bulk_cancel": cancel,
        "bulk_delete": delete,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "jobmgmt.json").write_text(json.dumps(detail, indent=2))
    print(json.dumps(detail, indent=2))
    return {
        # the targets (100 ms) are for --arg and --error; --arg-contains is listed apart
        "worst_indexed_search_db_ms": max(
            v["db_ms"] for k, v in search.items() if "arg-contains" not in k
        ),
        "worst_arg_contains_db_ms": max(
            v["db_ms"] for k, v in search.items() if "arg-contains" in k
        ),
        "search_index_jobs_per_s": indexing["jobs_per_s"],
        "bulk_cancel_jobs_per_s": cancel["jobs_per_s"],
        "bulk_cancel_at_least_5000_per_s": cancel["jobs_per_s"] >= 5000,
        "bulk_delete_jobs_per_s": delete["jobs_per_s"],
        "bulk_delete_rerun_longest_chunk_ms": delete["rerun_longest_chunk_ms"],
        "bulk_delete_interrupted_then_finished": delete["finished_left"] == 0,
        "claims_over_200ms_lock_wait": delete["claims_over_200ms_lock_wait"],
    }
