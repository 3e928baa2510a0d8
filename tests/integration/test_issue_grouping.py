"""Issues under concurrency: exact counts, no duplicates, no deadlocks; lifecycle."""

from __future__ import annotations

import asyncio
import string
from pathlib import Path

import failures_support as fx
import pytest
from failures_support import spool_home  # noqa: F401  (fixture)

from jobsys.failures.recorder import group_pending, record_failure
from jobsys.failures.store import FailureRow, insert_failure


def _word(n: int) -> str:
    letters = string.ascii_lowercase
    return letters[n // 26] + letters[n % 26] + "x"


pytestmark = pytest.mark.usefixtures("spool_home")


async def test_200_same_plus_50_distinct_from_8_workers(
    db_url: str,
    spool_home: Path,  # noqa: F811
) -> None:
    config = fx.repo_config()
    seeder = fx.build_app(db_url, config, max_size=2)
    async with seeder.open_async():
        await fx.defer(
            seeder,
            [("fx.same", {"account_id": i % 40, "item": i}) for i in range(200)]
            + [("fx.distinct", {"account_id": 1000 + i, "word": _word(i)}) for i in range(50)],
        )
    apps = [fx.build_app(db_url, config, max_size=5) for _ in range(8)]
    for app in apps:
        await app.open_async()
    try:
        await asyncio.wait_for(
            asyncio.gather(
                *(
                    fx.run_worker(app, config, concurrency=4, queues=["profiles"], name=f"w{i}")
                    for i, app in enumerate(apps)
                )
            ),
            timeout=120,
        )
    finally:
        for app in apps:
            await app.close_async()
    # Under this contention a capture may hit its lock timeout and spool: nothing lost.
    replayed, remaining = await fx.replay(db_url, config, spool_home)
    assert remaining == 0
    print(f"spooled then replayed: {replayed} of 250")
    workers = fx.rows(db_url, "SELECT count(DISTINCT worker) AS n FROM jobsys_failures")[0]["n"]
    assert workers > 1  # the work really was shared
    issues = fx.rows(db_url, "SELECT * FROM jobsys_issues ORDER BY occurrences DESC")
    assert len(issues) == 51
    assert sum(i["occurrences"] for i in issues) == 250
    top = issues[0]
    assert (top["task"], top["occurrences"], top["affected_accounts"]) == ("fx.same", 200, 40)
    assert all(i["occurrences"] == 1 and i["affected_accounts"] == 1 for i in issues[1:])
    assert fx.rows(db_url, "SELECT count(*) AS n FROM jobsys_issue_accounts")[0]["n"] == 90
    linked = fx.rows(
        db_url,
        "SELECT count(*) AS n FROM jobsys_failures f JOIN jobsys_issues i ON i.id = f.issue_id"
        " WHERE f.fingerprint = i.fingerprint",
    )
    assert linked[0]["n"] == 250


def _row(job_id: int, attempt: int = 1, **kw: object) -> FailureRow:
    base: dict[str, object] = {
        "job_id": job_id,
        "task": "t.refresh",
        "queue": "profiles",
        "attempt": attempt,
        "error_class": "builtins.KeyError",
        "message": f"'key{job_id}'",
        "kind": "runtime",
        "retryable": True,
        "account_id": str(job_id % 3),
    }
    base.update(kw)
    return FailureRow(**base)  # type: ignore[arg-type]


async def test_lifecycle_resolve_regression_mute_and_idempotent_replay(db_url: str) -> None:
    from jobsys.db.connect import connect

    config = fx.repo_config()
    async with connect(db_url) as conn:
        first = await record_failure(conn, _row(1), config)
        assert first is not None
        assert await record_failure(conn, _row(1), config) is None  # same attempt: no double count
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert issue["occurrences"] == 1 and issue["status"] == "open"
        assert issue["title"] == "KeyError in t.refresh: 'key1'"
        await conn.execute("UPDATE jobsys_issues SET status='resolved', resolved_at=now()")
        await record_failure(conn, _row(2), config)
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert (issue["status"], issue["regression"], issue["occurrences"]) == ("open", True, 2)
        assert (
            issue["latest_failure_id"]
            == fx.rows(db_url, "SELECT max(id) AS m FROM jobsys_failures")[0]["m"]
        )
        await conn.execute(
            "UPDATE jobsys_issues SET status='muted', muted_until=now() + interval '1 hour'"
        )
        await record_failure(conn, _row(3), config)
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert (issue["status"], issue["occurrences"], issue["affected_accounts"]) == (
            "muted",
            3,
            3,
        )
        await conn.execute("UPDATE jobsys_issues SET muted_until = now() - interval '1 second'")
        await record_failure(conn, _row(4), config)
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert issue["status"] == "open" and issue["muted_until"] is None


async def test_group_pending_groups_rows_inserted_without_issue(db_url: str) -> None:
    from jobsys.db.connect import connect

    config = fx.repo_config()
    async with connect(db_url) as conn:
        for job_id in range(1, 6):
            await insert_failure(
                conn,
                _row(
                    job_id,
                    reason="worker_lost",
                    error_class="jobsys.WorkerLost",
                    message=f"worker host{job_id}:4242 stopped heart-beating",
                ),
            )
        assert await group_pending(conn, config) == 5
        assert await group_pending(conn, config) == 0
    issues = fx.rows(db_url, "SELECT * FROM jobsys_issues")
    assert len(issues) == 1 and issues[0]["occurrences"] == 5
    assert (
        fx.rows(db_url, "SELECT count(*) AS n FROM jobsys_failures WHERE issue_id IS NULL")[0]["n"]
        == 0
    )
