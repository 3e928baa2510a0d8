"""Nothing lost: a 20-second lock on the failures table while 100 jobs fail."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import failures_support as fx
import psycopg
import pytest
from failures_support import spool_home  # noqa: F401  (fixture)
from rt_support import report

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
        service = FailureMaintenance(config, spool_home, grace_seconds=3600)
        result = await service.run_once(app)
    report(
        "failure-capture-table-locked",
        lock_s=float(LOCK_SECONDS),
        jobs_failed=100,
        jobs_settled_under_lock_s=worked,
        replayed_from_spool=result.replayed,
        spool_remaining=result.spool_remaining,
    )
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


async def test_a_capture_cancelled_mid_write_is_spooled(
    db_url: str,
    spool_home: Path,  # noqa: F811
) -> None:
    """A hard stop cancels the job while its failure is being written (the table is
    locked): the failure goes to the spool before the cancellation goes on, and the
    replay records it."""
    from types import SimpleNamespace

    from procrastinate import jobs as pjobs
    from procrastinate.job_context import JobContext

    from jobsys.failures.capture import capture_middleware
    from jobsys.failures.reconcile import replay_spool

    config = fx.repo_config()
    capture = capture_middleware(config, spool_home)
    app = fx.build_app(db_url, config)
    async with app.open_async():
        job = pjobs.Job(
            id=41,
            queue="profiles",
            lock=None,
            queueing_lock=None,
            task_name="fx.runtime",
            task_kwargs={"account_id": 7},
            attempts=0,
        )
        context = JobContext(
            app=app,
            job=job,
            start_timestamp=time.time(),
            abort_reason=lambda: None,
            additional_context={"lane": "base"},
        )
        worker = SimpleNamespace(app=app, worker_name="w")

        async def failing() -> None:
            raise RuntimeError("boom")

        locker = await psycopg.AsyncConnection.connect(db_url)
        await locker.execute("LOCK TABLE jobsys_failures IN ACCESS EXCLUSIVE MODE")
        try:
            running = asyncio.create_task(capture(failing, context, worker))
            await asyncio.sleep(0.2)  # the write waits for the lock
            running.cancel()
            with pytest.raises(asyncio.CancelledError):
                await running
        finally:
            await locker.rollback()
            await locker.close()
        assert capture.spool.count() == 1
        replayed, remaining = await replay_spool(app.connector.pool, config, capture.spool)
    assert (replayed, remaining) == (1, 0)
    (row,) = fx.rows(db_url, "SELECT job_id, error_class, account_id FROM jobsys_failures")
    assert row == {"job_id": 41, "error_class": "builtins.RuntimeError", "account_id": "7"}
