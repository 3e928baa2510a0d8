"""Failure capture from real failing tasks run by a real Procrastinate worker."""

from __future__ import annotations

import failures_support as fx
import pytest
from failures_support import spool_home  # noqa: F401  (fixture)

from jobsys.failures.reconcile import reconcile_events

pytestmark = pytest.mark.usefixtures("spool_home")


async def test_each_kind_classified_from_real_failing_tasks(db_url: str) -> None:
    config = fx.repo_config()
    app = fx.build_app(db_url, config)
    cases = ["fx.auth", "fx.transient", "fx.runtime", "fx.http401", "fx.http503", "fx.connection"]
    async with app.open_async():
        ids = await fx.defer(app, [(name, {"account_id": 7}) for name in cases])
        await fx.defer(app, [("fx.ok", {"account_id": 7})])
        await fx.run_worker(app, config, lane="base", queues=["profiles"])
    got = {
        r["task"]: r
        for r in fx.rows(db_url, "SELECT * FROM jobsys_failures WHERE job_id = ANY(%s)", (ids,))
    }
    expected = {
        "fx.auth": ("authentication", False, False),
        "fx.transient": ("transient", True, True),
        "fx.runtime": ("runtime", True, False),
        "fx.http401": ("authentication", False, False),
        "fx.http503": ("transient", True, True),
        "fx.connection": ("transient", True, True),
    }
    assert {t: (r["kind"], r["retryable"], r["will_retry"]) for t, r in got.items()} == expected
    runtime = got["fx.runtime"]
    assert runtime["error_class"] == "builtins.KeyError"
    assert runtime["message"] == "'edge_followed_by'"
    assert runtime["account_id"] == "7" and runtime["lane"] == "base" and runtime["attempt"] == 1
    assert runtime["queue"] == "profiles" and runtime["worker"] == "w"
    assert "raise KeyError" in runtime["traceback"]
    assert all(r["issue_id"] is not None and r["fingerprint"] for r in got.values())
    # Procrastinate agrees with will_retry: authentication is final, transient waits.
    status = {
        r["task_name"]: r["status"]
        for r in fx.rows(db_url, "SELECT task_name, status FROM procrastinate_jobs")
    }
    assert status["fx.auth"] == "failed" and status["fx.http401"] == "failed"
    assert status["fx.transient"] == "todo" and status["fx.runtime"] == "failed"
    assert status["fx.ok"] == "succeeded"
    assert fx.rows(db_url, "SELECT count(*) AS n FROM jobsys_failures")[0]["n"] == 6


async def test_timeout_recorded_with_reason(db_url: str) -> None:
    config = fx.repo_config()
    app = fx.build_app(db_url, config)
    async with app.open_async():
        await fx.defer(app, [("fx.timeout", {"account_id": 3})])
        await fx.run_worker(app, config, lane="ai", queues=["ai"])
    (row,) = fx.rows(db_url, "SELECT * FROM jobsys_failures")
    assert (row["reason"], row["kind"], row["retryable"], row["will_retry"]) == (
        "timeout",
        "transient",
        True,
        True,
    )
    assert row["error_class"] == "jobsys.errors.JobTimeoutError"
    assert row["lane"] == "ai"


async def test_task_not_found_recorded_by_reconciliation(db_url: str) -> None:
    config = fx.repo_config()
    app = fx.build_app(db_url, config)
    async with app.open_async():
        job_id = await app.configure_task(name="fx.gone", queue="profiles").defer_async(
            account_id=5
        )
        await fx.run_worker(app, config, queues=["profiles"])
        assert fx.rows(db_url, "SELECT count(*) AS n FROM jobsys_failures")[0]["n"] == 0
        async with app.connector.pool.connection() as conn:
            await conn.set_autocommit(True)
            recorded, _ = await reconcile_events(conn, config, grace_seconds=0)
            again, _ = await reconcile_events(conn, config, grace_seconds=0)
    assert (recorded, again) == (1, 0)
    (row,) = fx.rows(db_url, "SELECT * FROM jobsys_failures")
    assert row["job_id"] == job_id and row["reason"] == "task_not_found"
    assert row["account_id"] == "5" and row["attempt"] == 1 and row["issue_id"] is not None


async def test_authentication_is_never_retried_even_when_the_task_allows_retries(
    db_url: str,
) -> None:
    config = fx.repo_config()
    from jobsys.config.models import RetrySection

    config = fx.repo_config(retry=RetrySection(runtime_max_attempts=3, transient_max_attempts=3))
    app = fx.build_app(db_url, config)
    async with app.open_async():
        await fx.defer(app, [("fx.auth", {"account_id": 1}), ("fx.runtime", {"account_id": 1})])
        await fx.run_worker(app, config, queues=["profiles"])
    got = {r["task"]: r for r in fx.rows(db_url, "SELECT * FROM jobsys_failures")}
    # runtime retried at once (no backoff) up to 3 more attempts; authentication never.
    assert (
        fx.rows(db_url, "SELECT count(*) AS n FROM jobsys_failures WHERE task='fx.auth'")[0]["n"]
        == 1
    )
    assert got["fx.auth"]["will_retry"] is False
    attempts = [
        r["attempt"]
        for r in fx.rows(
            db_url, "SELECT attempt FROM jobsys_failures WHERE task='fx.runtime' ORDER BY attempt"
        )
    ]
    assert attempts == [1, 2, 3, 4]
    issue = fx.rows(db_url, "SELECT * FROM jobsys_issues WHERE task = 'fx.runtime'")
    assert len(issue) == 1 and issue[0]["occurrences"] == 4 and issue[0]["affected_accounts"] == 1
