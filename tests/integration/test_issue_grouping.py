"""Issues under concurrency: exact counts, no duplicates, no deadlocks; lifecycle."""

from __future__ import annotations

import asyncio
import string
from pathlib import Path
from typing import Any

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
        assert issue["title"] == "KeyError in t.refresh: <str>"
        # resolved as the healer does, after a reopen by hand (its details keep who)
        await conn.execute(
            "UPDATE jobsys_issues SET status='resolved', resolved_at=now(),"
            """ details = details || '{"reopened_by": "alice"}'"""
        )
        await record_failure(conn, _row(2), config)
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert (issue["status"], issue["regression"], issue["occurrences"]) == ("open", True, 2)
        assert "reopened_by" not in issue["details"]  # reopened by no one this time
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


async def _row_writes(conn: Any) -> tuple[int, int]:
    cur = await conn.execute(
        "SELECT n_tup_ins, n_tup_upd FROM pg_stat_xact_user_tables"
        " WHERE relname = 'jobsys_failures'"
    )
    row = await cur.fetchone()
    return int(row["n_tup_ins"]), int(row["n_tup_upd"])


async def _events(listener: Any) -> list[dict[str, Any]]:
    """The events delivered so far (the recorder's transactions have committed)."""
    import json

    found = []
    async for note in listener.notifies(timeout=0.5):
        found.append(json.loads(note.payload))
    return found


async def test_one_round_trip_records_once_per_transaction_and_writes_rows_once(
    db_url: str,
) -> None:
    """The failure, its issue, account and events go out together and are exact: a
    failure of a known issue is written with its issue_id (no second row version), the
    first of a new issue is linked, a duplicate in the same transaction counts nothing
    and does not reuse the ids the first recording left behind."""
    from jobsys.db.connect import connect

    config = fx.repo_config()
    async with connect(db_url) as listener, connect(db_url) as conn:
        await listener.execute("LISTEN jobsys_events")
        first = await record_failure(conn, _row(1, message="'key'"), config)
        (issue,) = fx.rows(db_url, "SELECT id FROM jobsys_issues")
        assert fx.rows(db_url, "SELECT issue_id FROM jobsys_failures WHERE id = %s", [first]) == [
            {"issue_id": issue["id"]}
        ]
        async with conn.transaction():
            # Counters of this backend not yet flushed (earlier transactions' too): compare.
            before = await _row_writes(conn)
            second = await record_failure(conn, _row(2, message="'key'"), config)
            assert await record_failure(conn, _row(2, message="'key'"), config) is None
            after = await _row_writes(conn)
            assert (after[0] - before[0], after[1] - before[1]) == (1, 0)  # inserted, updated
        events = await _events(listener)
    assert sorted((e["topic"], e.get("failure_id")) for e in events) == [
        ("issues_changed", None),
        ("issues_changed", None),
        ("job_failures_changed", first),
        ("job_failures_changed", second),
    ]
    assert all(e["issue_id"] == issue["id"] for e in events)
    (counted,) = fx.rows(db_url, "SELECT occurrences, affected_accounts FROM jobsys_issues")
    assert counted == {"occurrences": 2, "affected_accounts": 2}
    linked = fx.rows(db_url, "SELECT count(*) AS n FROM jobsys_failures WHERE issue_id IS NULL")
    assert linked == [{"n": 0}]


async def test_recording_commits_on_a_connection_without_autocommit(db_url: str) -> None:
    from jobsys.db.connect import connect

    config = fx.repo_config()
    async with connect(db_url, autocommit=False) as conn:
        assert await record_failure(conn, _row(1), config) is not None
        # Committed by record_failure itself: another connection sees it at once.
        assert fx.rows(db_url, "SELECT occurrences FROM jobsys_issues") == [{"occurrences": 1}]


async def test_a_login_wall_across_tasks_is_one_issue_naming_no_task(db_url: str) -> None:
    """Authentication failures of several tasks and queues group into one issue; the
    issue names no task or queue (it is not any one task's), each failure keeps its own."""
    from jobsys.db.connect import connect

    config = fx.repo_config()
    wall = {
        "kind": "authentication",
        "retryable": False,
        "error_class": "jobsys.errors.AuthenticationError",
    }
    async with connect(db_url) as conn:
        for job_id, task, queue in (
            (1, "t.refresh", "profiles"),
            (2, "t.like", "engagements"),
            (3, "t.refresh", "profiles"),
        ):
            message = f"account {job_id} must log in again"
            row = _row(job_id, task=task, queue=queue, message=message, **wall)
            assert await record_failure(conn, row, config) is not None
    (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
    assert (issue["task"], issue["queue"], issue["occurrences"]) == (None, None, 3)
    failures = fx.rows(db_url, "SELECT task, queue, issue_id FROM jobsys_failures ORDER BY id")
    assert [(f["task"], f["queue"]) for f in failures] == [
        ("t.refresh", "profiles"),
        ("t.like", "engagements"),
        ("t.refresh", "profiles"),
    ]
    assert {f["issue_id"] for f in failures} == {issue["id"]}


async def test_affected_accounts_are_listed_in_numeric_order(db_url: str) -> None:
    from jobsys.db.connect import connect
    from jobsys.issues import store as issues_store

    config = fx.repo_config()
    async with connect(db_url) as conn:
        for job_id, account in enumerate(["15", "9", "100", "abc", "2"], start=1):
            row = _row(job_id, message="'key'", account_id=account)
            assert await record_failure(conn, row, config) is not None
        (issue,) = fx.rows(db_url, "SELECT id FROM jobsys_issues")
        accounts = await issues_store.issue_accounts(conn, issue["id"], 10)
    assert accounts == ["2", "9", "15", "100", "abc"]
