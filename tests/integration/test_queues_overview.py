"""``jobsys queues``: one row per configured queue, counts from the database."""

from __future__ import annotations

import asyncio

import psycopg
from rt_support import query

from jobsys.failures.store import FailureRow, insert_failure


def test_queues_json_counts(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    base = ["--database-url", db_url, "defer", "demo.refresh_profile"]
    for account in (1, 2, 3):
        assert cli(*base, "--args", f'{{"account_id": {account}}}').exit_code == 0
    assert cli(*base, "--args", '{"account_id": 4}', "--in", "1h").exit_code == 0
    query(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = 3")
    query(db_url, "UPDATE procrastinate_events SET at = now() - interval '90 seconds'")

    async def add_failures() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            for attempt in (1, 2):
                await insert_failure(
                    conn,
                    FailureRow(
                        job_id=3, task="demo.refresh_profile", queue="profiles", attempt=attempt,
                        error_class="KeyError", message="x", kind="runtime", retryable=True,
                    ),
                )  # fmt: skip

    asyncio.run(add_failures())
    result = cli("--database-url", db_url, "queues", "--json")
    assert result.exit_code == 0, result.stderr
    rows = result.json()["items"]
    assert [r["queue"] for r in rows][:3] == ["sync", "engagements", "story_downloads"]
    assert len(rows) == 16
    keys = {"queue", "lane", "concurrency", "waiting", "running", "failed_last_hour"}
    assert all(keys | {"oldest_wait_seconds"} <= set(r) for r in rows)
    profiles = next(r for r in rows if r["queue"] == "profiles")
    assert (profiles["lane"], profiles["concurrency"]) == ("base", 10)
    assert (profiles["waiting"], profiles["scheduled"], profiles["running"]) == (2, 1, 1)
    assert profiles["failed_last_hour"] == 2
    assert 89 <= profiles["oldest_wait_seconds"] < 120
    face = next(r for r in rows if r["queue"] == "ai_face_queue")
    assert face == {
        "queue": "ai_face_queue", "lane": "ai_face_queue", "concurrency": 2, "waiting": 0,
        "scheduled": 0, "running": 0, "failed_last_hour": 0, "oldest_wait_seconds": None,
        "pause": None, "held": [],
    }  # fmt: skip
    table = cli("--database-url", db_url, "queues")
    assert table.exit_code == 0 and "profiles" in table.stdout
