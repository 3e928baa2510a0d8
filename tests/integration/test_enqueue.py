"""One insert path: every way jobs are made runnable goes through
``jobsys.jobs.enqueue.enqueue`` (``jobsys.engine.inserts`` under it) and is announced on
``jobs_changed`` once, on commit: ``jobsys.defer``, ``defer_many``, a schedule tick, a
fan-out batch, a pipeline's first stage and a retry. Pipeline steps announced nothing
before the engine door existed; the other five announced in four different ways.
"""

from __future__ import annotations

import ast
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
from _retry_support import bulk_failed_jobs

from jobsys import task
from jobsys.config.application import load_config
from jobsys.db.connect import connect
from jobsys.pipelines.definitions import pipeline, step
from jobsys.pipelines.store import start_pipeline
from jobsys.retry import engine as retry_engine
from jobsys.schedule.fanout import FanoutSource, run_batch, start_fanout
from jobsys.schedule.plan import PlannedEntry
from jobsys.schedule.scheduler import fire
from jobsys.settings import Settings

REPO = Path(__file__).resolve().parents[2]
QUEUE = "maintenance"


@task(queue=QUEUE, name="t_enqueue.step")
async def enqueue_step(story: str) -> None:
    return None


ONE_STEP = pipeline("t_enqueue.one_step", step("only", enqueue_step))


@pytest.fixture
def config(db_url: str) -> Any:
    from jobsys.jobs import defer

    loaded = load_config(Settings(database_url=db_url, config_dir=REPO / "config"))
    defer.configure(loaded, url=db_url)
    yield loaded
    defer.deactivate()


@pytest.fixture
async def announcements(db_url: str) -> AsyncIterator[Callable[[], Awaitable[list[dict]]]]:
    """The ``jobs_changed`` payloads committed since the last call."""
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN jobsys_events")

        async def received() -> list[dict[str, Any]]:
            bodies = [json.loads(n.payload) async for n in listener.notifies(timeout=0.5)]
            return [b for b in bodies if b["topic"] == "jobs_changed"]

        yield received


async def test_each_insert_path_announces_once(
    db_url: str, config: Any, announcements: Callable[[], Awaitable[list[dict]]]
) -> None:
    import jobsys

    with psycopg.connect(db_url, autocommit=True) as setup:
        setup.execute("CREATE TABLE accounts (id bigint primary key, active boolean not null)")
        setup.execute("INSERT INTO accounts SELECT i, true FROM generate_series(1, 5) i")
    (failure_id,) = bulk_failed_jobs(db_url, 1)
    seen: dict[str, list[dict[str, Any]]] = {}

    async with connect(db_url) as conn:
        job_id = await jobsys.defer("demo.purge_expired_post_media", connection=conn)
        await conn.commit()
        seen["defer"] = await announcements()
        assert seen["defer"] == [{"topic": "jobs_changed", "deferred": 1, "ids": [job_id]}]

        ids = await jobsys.defer_many("demo.purge_expired_post_media", [{}, {}], connection=conn)
        await conn.commit()
        seen["defer_many"] = await announcements()
        assert seen["defer_many"] == [{"topic": "jobs_changed", "deferred": 2, "ids": ids}]

        entry = PlannedEntry(
            name="tick",
            cron="* * * * *",
            timezone="UTC",
            task="demo.purge_expired_post_media",
            queue=QUEUE,
            priority=0,
        )
        async with conn.transaction():
            fired = await fire(conn, entry, datetime(2030, 1, 1, tzinfo=UTC), status="enqueued")
        seen["schedule_tick"] = await announcements()
        assert seen["schedule_tick"] == [
            {"topic": "jobs_changed", "deferred": 1, "ids": [fired.job_id]}
        ]

        async with conn.transaction():
            started = await start_fanout(
                conn,
                entry="fan",
                source=FanoutSource("accounts", "id", "active"),
                task="demo.purge_expired_post_media",
                queue=QUEUE,
                batch_size=10,
            )
        await announcements()  # the run's first batch job: a plain deferral
        assert started.run_id is not None
        await run_batch(conn, started.run_id, None)
        seen["fanout_batch"] = await announcements()
        assert seen["fanout_batch"] == [{"topic": "jobs_changed", "deferred": 5, "ids": []}]

        pipeline_id = await start_pipeline(
            conn, "t_enqueue.one_step", entity="story-1", args={"story": "s1"}
        )
        await conn.commit()
        seen["pipeline_step"] = await announcements()
        cur = await conn.execute(
            "SELECT job_id FROM jobsys_pipeline_steps WHERE pipeline_id = %s", (pipeline_id,)
        )
        step_job = [row["job_id"] for row in await cur.fetchall()]
        await conn.commit()
        assert seen["pipeline_step"] == [{"topic": "jobs_changed", "deferred": 1, "ids": step_job}]

        decisions = await retry_engine.decide_chunk(
            conn, [failure_id], actor="test", batch_id="b1", mode="manual", now=datetime.now(UTC)
        )
        await conn.commit()
        assert [d.retried for d in decisions] == [True]
        seen["retry"] = await announcements()
        assert seen["retry"] == [{"topic": "jobs_changed", "retried": 1}]

    assert sorted(seen) == sorted(
        ["defer", "defer_many", "schedule_tick", "fanout_batch", "pipeline_step", "retry"]
    )


def test_only_enqueue_reaches_the_insert_path() -> None:
    """No module but ``jobsys.jobs.enqueue`` imports ``jobsys.engine.inserts``, and no
    module outside the engine names Procrastinate's insert or retry functions."""
    package = REPO / "jobsys"
    importers, namers = [], []
    for path in sorted(package.rglob("*.py")):
        module = ".".join(path.relative_to(REPO).with_suffix("").parts)
        source = path.read_text(encoding="utf-8")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = {f"{node.module}.{a.name}" for a in node.names} | {node.module}
                if "jobsys.engine.inserts" in names:
                    importers.append(module)
        if not module.startswith("jobsys.engine") and any(
            name in source
            for name in ("procrastinate_defer_jobs", "procrastinate_retry_job", "batch_defer_jobs")
        ):
            namers.append(module)
    assert sorted(set(importers)) == ["jobsys.jobs.enqueue"]
    assert namers == []
