"""Nothing lost: a 20-second lock on the failures table while 100 jobs fail."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import failures_support as fx
import psycopg
import pytest
from failures_support import spool_home  # noqa: F401  (fixture)

from jobsys.failures.reconcile import FailureMaintenance

LOCK_SECONDS = 20.0


@pytest.mark.slow
async def test_100_of_100_failures_arrive_after_a_20s_table_lock(
    db_url: str,
    spool_home: Path,  # noqa: F811
) -> None:
    config = fx.repo_config()
    app = fx.build_app(db_url, config)
    async with app.open_async():
        await fx.defer(app, [("fx.same", {"account_id": i % 10, "item": i}) for i in range(100)])
        locker = await psycopg.AsyncConnection.connect(db_url)
        await locker.execute("LOCK TABLE jobsys_failures IN ACCESS EXCLUSIVE MODE")
        locked_at = time.monotonic()
        try:
            await fx.run_worker(app, config, concurrency=10, queues=["profiles"])
            worked = time.monotonic() - locked_at
            # The jobs reached their final state while the table was still locked.
            assert worked < LOCK_SECONDS, worked
            status = fx.rows(
                db_url, "SELECT status, count(*) AS n FROM procrastinate_jobs GROUP BY 1"
            )
            assert status == [{"status": "failed", "n": 100}]
            await asyncio.sleep(max(0.0, LOCK_SECONDS - (time.monotonic() - locked_at)))
        finally:
            await locker.rollback()
            await locker.close()
        print(f"100 jobs failed in {worked:.1f}s under the lock")
        service = FailureMaintenance(config, spool_home, grace_seconds=3600)
        result = await service.run_once(app)
    assert result.replayed == 100 and result.spool_remaining == 0
    (count,) = fx.rows(
        db_url, "SELECT count(*) AS n, count(DISTINCT job_id) AS jobs FROM jobsys_failures"
    )
    assert count == {"n": 100, "jobs": 100}
    (issue,) = fx.rows(db_url, "SELECT occurrences, affected_accounts FROM jobsys_issues")
    assert issue == {"occurrences": 100, "affected_accounts": 10}
    times = fx.rows(
        db_url, "SELECT max(occurred_at) - min(occurred_at) AS span FROM jobsys_failures"
    )
    assert times[0]["span"].total_seconds() < LOCK_SECONDS  # original times kept, not replay time
