"""The automatic batch retry: backoff, cap, never authentication, outage replay."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from _retry_support import (
    BEHAVIOUR,
    TEST_QUEUE,
    defer,
    drain,
    failed_job,
    make_issue,
    procrastinate_app,
    sql,
)

from jobsys.config.models import AutoRetry
from jobsys.db.connect import connect
from jobsys.retry.auto import run_once

POLICY = AutoRetry(batch_size=100, max_attempts=2, base_delay_seconds=30, max_delay_seconds=3600)


async def tick(db_url: str, now: datetime, auto: AutoRetry = POLICY) -> dict[str, Any]:
    async with connect(db_url) as conn:
        return (await run_once(conn, auto, now=now)).as_dict()


def last_failed_at(db_url: str, job_id: int) -> datetime:
    rows = sql(
        db_url, "SELECT max(occurred_at) AS t FROM jobsys_failures WHERE job_id = %s", (job_id,)
    )
    return rows[0]["t"]  # type: ignore[no-any-return]


def job_status(db_url: str, job_id: int) -> str:
    return str(
        sql(db_url, "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,))[0]["status"]
    )


async def test_backoff_then_cap(db_url: str) -> None:
    async with procrastinate_app(db_url) as app:
        job_id, _ = await failed_job(app, "auto1", "transient")
        _, auth_failure = await failed_job(app, "auto-auth", "auth")
        t0 = last_failed_at(db_url, job_id)
        # Within the first backoff (30 s): recorded once, then left alone until due.
        assert (await tick(db_url, t0 + timedelta(seconds=10)))["counts"] == {"skipped_backoff": 1}
        assert (await tick(db_url, t0 + timedelta(seconds=20)))["counts"] == {}
        assert (await tick(db_url, t0 + timedelta(seconds=31)))["counts"] == {"retried": 1}
        assert job_status(db_url, job_id) == "todo"
        await drain(app, [TEST_QUEUE])  # fails again: the second backoff is 60 s
        t1 = last_failed_at(db_url, job_id)
        result = await tick(db_url, t1 + timedelta(seconds=59))
        assert result["reconciled"] == 1 and result["counts"] == {"skipped_backoff": 1}
        assert (await tick(db_url, t1 + timedelta(seconds=61)))["counts"] == {"retried": 1}
        await drain(app, [TEST_QUEUE])
        t2 = last_failed_at(db_url, job_id)
        # Two automatic retries made: the cap. Recorded once, never again.
        assert (await tick(db_url, t2 + timedelta(hours=5)))["counts"] == {"skipped_auto_cap": 1}
        assert (await tick(db_url, t2 + timedelta(hours=6)))["counts"] == {}
    assert job_status(db_url, job_id) == "failed"
    events = sql(
        db_url,
        "SELECT decision, actor FROM jobsys_retry_events e JOIN jobsys_failures f"
        " ON f.id = e.failure_id WHERE f.job_id = %s ORDER BY e.id",
        (job_id,),
    )
    assert [e["decision"] for e in events] == [
        "skipped_backoff",
        "retried",
        "skipped_backoff",
        "retried",
        "skipped_auto_cap",
    ]
    assert {e["actor"] for e in events} == {"auto"}
    # The authentication failure was never even considered.
    assert sql(
        db_url,
        "SELECT count(*) AS n FROM jobsys_retry_events WHERE failure_id = %s",
        (auth_failure,),
    ) == [{"n": 0}]


async def test_outage_resolution_replays_its_failures_in_batches(db_url: str) -> None:
    outage = make_issue(db_url, kind="service_outage")
    async with procrastinate_app(db_url) as app:
        jobs = []
        for i in range(5):
            BEHAVIOUR[f"out{i}"] = "transient"
            jobs.append(await defer(app, f"out{i}"))
        await drain(app, [TEST_QUEUE], issue_id=outage)
        _, auth_failure = await failed_job(app, "out-auth", "auth")
    sql(db_url, "UPDATE jobsys_failures SET issue_id = %s WHERE id = %s", (outage, auth_failure))
    now = datetime.now().astimezone() + timedelta(hours=1)
    small = AutoRetry(batch_size=2, max_attempts=1, base_delay_seconds=30, max_delay_seconds=60)
    # While the outage is open: each failure is noted once, nothing is retried.
    first = await tick(db_url, now, small)
    assert first["counts"] == {"skipped_outage_open": 2}
    for _ in range(3):
        await tick(db_url, now, small)
    assert sql(db_url, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'") == [
        {"n": 0}
    ]
    sql(
        db_url,
        "UPDATE jobsys_issues SET status = 'resolved', resolved_at = now() WHERE id = %s",
        (outage,),
    )
    later = now + timedelta(minutes=1)
    replay = [await tick(db_url, later + timedelta(minutes=i), small) for i in range(4)]
    assert [sum(r["counts"].values()) for r in replay] == [2, 2, 2, 0]
    assert [r["replayed_issues"] for r in replay] == [[], [], [], [outage]]
    assert sum(r["counts"].get("retried", 0) for r in replay) == 5
    assert sum(r["counts"].get("skipped_authentication", 0) for r in replay) == 1
    assert [job_status(db_url, j) for j in jobs] == ["todo"] * 5
    (replay,) = sql(
        db_url,
        "SELECT replayed_at, cursor, retried FROM jobsys_outage_replays WHERE issue_id = %s",
        (outage,),
    )
    assert replay["replayed_at"] and replay["cursor"] is None and replay["retried"] == 5
    details = sql(db_url, "SELECT details FROM jobsys_issues WHERE id = %s", (outage,))[0]
    assert not {"replayed_at", "replay_cursor", "replay_retried"} & set(details["details"])
