"""Bulk retry of 10,000 failures (``jobsys retry --all``'s service) beside Procrastinate's
own ``JobManager.retry_job_by_id_async`` called one by one for as many jobs, same run.

Creates and drops its own database on the server named by JOBSYS_BENCH_DATABASE_URL
or JOBSYS_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

COUNT = 10_000
TASK = "demo.refresh_profile"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
RESULTS = Path(__file__).resolve().parent / "results"

# Failed jobs exactly as a worker leaves them (Procrastinate's own functions), and one
# failure row each, in the bench's own database.
MAKE_FAILED_JOBS = """
SELECT unnest(procrastinate_defer_jobs_v1(array_agg(
    ROW('profiles', %(task)s, 0, NULL, NULL, jsonb_build_object('account_id', g), NULL)
        ::procrastinate_job_to_defer_v1
))) AS id FROM generate_series(1, %(count)s) g
"""
FAIL_JOBS = """
WITH d AS (UPDATE procrastinate_jobs SET status = 'doing' WHERE id = ANY(%(ids)s) RETURNING id)
SELECT procrastinate_finish_job_v1(id, 'failed', false) FROM d
"""
MAKE_ISSUE = """
INSERT INTO jobsys_issues (fingerprint, kind, title) VALUES (%(fp)s, 'job_failure', 'bench')
RETURNING id
"""
MAKE_FAILURES = """
INSERT INTO jobsys_failures (job_id, task, queue, lane, attempt, error_class, message, kind,
                             retryable, issue_id, account_id)
SELECT id, %(task)s, 'profiles', 'base', 1, 'KeyError', 'edge_followed_by', 'runtime', true,
       %(issue)s, (id %% 40)::text
FROM unnest(%(ids)s::bigint[]) id
"""


def _server_url() -> str:
    return (
        os.environ.get("JOBSYS_BENCH_DATABASE_URL")
        or os.environ.get("JOBSYS_TEST_DATABASE_URL")
        or DEFAULT_URL
    )


def _failed_jobs(url: str, count: int) -> list[int]:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        ids = [r[0] for r in conn.execute(MAKE_FAILED_JOBS, {"task": TASK, "count": count})]
        conn.execute(FAIL_JOBS, {"ids": ids})
    return ids


def _failures(url: str, ids: list[int]) -> int:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(MAKE_ISSUE, {"fp": uuid.uuid4().hex}).fetchone()
        assert row is not None
        conn.execute(MAKE_FAILURES, {"task": TASK, "issue": row[0], "ids": ids})
    return int(row[0])


async def _jobsys_bulk(url: str, issue: int) -> tuple[float, int]:
    from jobsys.retry.service import RetryRequest, retry
    from jobsys.settings import Settings

    repo = Path(__file__).resolve().parents[1]
    settings = Settings(
        database_url=url,
        home=Path(tempfile.mkdtemp()),
        config_dir=repo / "config",
        operator="bench",
    )
    started = time.perf_counter()
    report = await retry(settings, RetryRequest(issue=issue))
    return time.perf_counter() - started, report.retried


async def _procrastinate_one_by_one(url: str, ids: list[int]) -> float:
    from jobsys.lanes.execution import build_engine_app

    app = build_engine_app(url)
    async with app.open_async():
        started = time.perf_counter()
        for job_id in ids:
            await app.job_manager.retry_job_by_id_async(job_id, datetime.now(UTC))
        return time.perf_counter() - started


def run() -> dict[str, float]:
    import psycopg

    from jobsys.db import migrate
    from jobsys.db.url import with_database

    server = _server_url()
    name = f"jobsys_bench_retry_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    try:
        migrate.upgrade(url)
        issue = _failures(url, _failed_jobs(url, COUNT))
        plain_ids = _failed_jobs(url, COUNT)
        jobsys_s, retried = asyncio.run(_jobsys_bulk(url, issue))
        assert retried == COUNT, f"only {retried} of {COUNT} retried"
        plain_s = asyncio.run(_procrastinate_one_by_one(url, plain_ids))
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    results = {
        "failures": float(COUNT),
        "jobsys_bulk_s": jobsys_s,
        "jobsys_bulk_per_s": COUNT / jobsys_s,
        "procrastinate_one_by_one_s": plain_s,
        "procrastinate_one_by_one_per_s": COUNT / plain_s,
        "speedup": plain_s / jobsys_s,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "retry.json").write_text(json.dumps(results, indent=2))
    return results


def main() -> None:
    for key, value in run().items():
        print(f"retry        {key:<32} {value:12.3f}")


if __name__ == "__main__":
    main()
