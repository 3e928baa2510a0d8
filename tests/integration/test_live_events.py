"""Live events: every topic from its real cause, through ``jobsys events --json``."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import psycopg
import pytest
from live_support import EventsProcess, run_worker_until_idle

import jobsys
from jobsys import task
from jobsys.config import Config
from jobsys.config.application import load_config
from jobsys.failures.store import FailureRow, insert_failure
from jobsys.lanes.execution import build_engine_app
from jobsys.live import coalesce
from jobsys.live.publish import MAX_PAYLOAD_BYTES, publish
from jobsys.live.services import MetricsTicker
from jobsys.settings import Settings

CANARY = "canary-7f3e9d1c-secret"


@task(queue="default", name="tests.live.succeed")
def succeed(account_id: int, password: str = "") -> None:
    return None


@task(queue="default", name="tests.live.fail")
def fail(account_id: int, password: str = "") -> None:
    raise KeyError(f"boom {password}")


@pytest.fixture(autouse=True)
def _fresh_coalescer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coalesce, "_SHARED", None)


@pytest.fixture
def config(settings: Settings) -> Config:
    return load_config(settings)


@pytest.fixture
def events(db_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    procs: list[EventsProcess] = []

    def start(*args: str) -> EventsProcess:
        proc = EventsProcess(db_url, tmp_path / "home", *args)
        procs.append(proc)
        proc.wait_ready()
        return proc

    yield start
    for proc in procs:
        if proc.proc.poll() is None:
            proc.stop()


async def defer(url: str, task_name: str, count: int, **kwargs: Any) -> list[int]:
    app = build_engine_app(url)
    async with app.open_async():
        deferrer = app.configure_task(task_name)
        return [await deferrer.defer_async(account_id=i, **kwargs) for i in range(count)]


def test_every_topic_arrives_from_its_real_cause(events, db_url: str, config: Config) -> None:  # type: ignore[no-untyped-def]
    proc = events()

    # Job lifecycle: a real worker runs real jobs with the live middleware.
    ok_ids = asyncio.run(defer(db_url, "tests.live.succeed", 3, password=CANARY))
    bad_ids = asyncio.run(defer(db_url, "tests.live.fail", 1, password=CANARY))
    asyncio.run(run_worker_until_idle(db_url, config, ["default"]))
    seen: dict[str, int] = {"succeeded": 0, "failed": 0, "started": 0}
    ids: set[int] = set()

    def lifecycle_done(event: dict[str, Any]) -> bool:
        if event["topic"] == "jobs_changed":
            for key in seen:
                seen[key] += event["data"].get(key, 0)
            ids.update(event["data"].get("ids", []))
        return seen == {"succeeded": 3, "failed": 1, "started": 4}

    proc.wait_for(lifecycle_done)
    assert ids == {*ok_ids, *bad_ids}

    async def failure_issue_metrics_app() -> dict[str, int]:
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            # A captured failure, published in its own transaction (failures domain's way).
            async with conn.transaction():
                failure_id = await insert_failure(
                    conn,
                    FailureRow(
                        job_id=bad_ids[0],
                        task="tests.live.fail",
                        queue="default",
                        attempt=1,
                        error_class="KeyError",
                        message="boom [REDACTED]",
                        kind="runtime",
                        retryable=True,
                    ),
                )
                await publish(
                    conn, "job_failures_changed", {"ids": [failure_id], "kind": "runtime"}
                )
            # An issue opened (issues domain's way).
            async with conn.transaction():
                cur = await conn.execute(
                    "INSERT INTO jobsys_issues (fingerprint, kind, title) "
                    "VALUES ('fp1', 'job_failure', 'KeyError in tests.live.fail') RETURNING id"
                )
                row = await cur.fetchone()
                assert row is not None
                await publish(conn, "issues_changed", {"id": row[0], "opened": 1})
            # A metrics tick.
            async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as auto:
                published = await MetricsTicker(interval_seconds=5).run_once(auto)
        # Application code through the public API (no connection: a short one).
        await jobsys.publish("profiles_table_changed", {"profile_id": 42, "password": CANARY})
        return published

    import os

    os.environ["JOBSYS_DATABASE_URL"] = db_url
    try:
        published = asyncio.run(failure_issue_metrics_app())
    finally:
        del os.environ["JOBSYS_DATABASE_URL"]
    jobsys._url_cache = None

    # The failing job is recorded by failure capture (a worker middleware), which
    # publishes in its own transaction; the row inserted above is then a no-op.
    failure = proc.find(
        lambda e: e["topic"] == "job_failures_changed" and "failure_id" in e["data"]
    )
    assert failure["data"]["kind"] == "runtime" and isinstance(failure["data"]["failure_id"], int)
    issue = proc.wait_for(lambda e: e["topic"] == "issues_changed" and "opened" in e["data"])
    assert issue["data"]["opened"] == 1
    metrics = proc.wait_for(lambda e: e["topic"] == "dashboard_metrics_changed")
    assert metrics["data"] == published and published["succeeded"] == 3
    profile = proc.wait_for(lambda e: e["topic"] == "profiles_table_changed")
    assert profile["data"] == {"profile_id": 42}

    assert proc.stop() == 0
    for line in proc.raw:
        assert CANARY not in line
        assert len(json.dumps(json.loads(line)["data"]).encode()) <= MAX_PAYLOAD_BYTES


def test_topic_filter_and_unknown_topic(events, db_url: str, cli) -> None:  # type: ignore[no-untyped-def]
    proc = events("--topic", "issues_changed")

    async def send() -> None:
        async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
            await publish(conn, "jobs_changed", {"count": 1})
            await publish(conn, "issues_changed", {"id": 7})

    asyncio.run(send())
    event = proc.wait_for(lambda e: True)
    assert event["topic"] == "issues_changed" and event["data"] == {"id": 7}

    result = cli("--database-url", db_url, "events", "--topic", "jobs_chanegd")
    assert result.exit_code == 2
    assert "unknown topic 'jobs_chanegd' (did you mean 'jobs_changed'?)" in result.stderr
    assert "profiles_table_changed" in result.stderr
    assert result.stdout == ""


def test_unreachable_database_exits_69(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", "postgresql://u:sekret99@127.0.0.1:1/x", "events")
    assert result.exit_code == 69
    assert "sekret99" not in result.stderr and "Traceback" not in result.stderr


def test_burst_of_10000_completions_is_coalesced(db_url: str) -> None:
    """10,000 outcomes recorded by the middleware in a burst: a bounded number of
    NOTIFYs per topic, and the counts they carry add up to every job."""
    from bench.live import middleware_burst

    rate = 10
    texts, burst, elapsed = asyncio.run(
        middleware_burst(
            db_url,
            10_000,
            rate=rate,
            task_kwargs={"password": CANARY},
            pause_every=500,
            pause_seconds=0.01,
        )
    )
    assert burst < elapsed
    for text in texts:
        assert CANARY not in text
        assert len(text.encode()) <= MAX_PAYLOAD_BYTES
    received = [json.loads(text) for text in texts]
    jobs_events = [e for e in received if e["topic"] == "jobs_changed"]
    # At most `rate` per second, plus the final flush on stop.
    assert 1 <= len(jobs_events) <= math.ceil(elapsed * rate) + 1, (len(jobs_events), elapsed)
    assert sum(e.get("succeeded", 0) for e in jobs_events) == 10_000
    assert sum(e.get("started", 0) for e in jobs_events) == 10_000
    assert all(len(e.get("ids", [])) <= coalesce.MAX_IDS for e in jobs_events)
