"""Fencing and the reaper's outage guard: a job never runs in two processes at once.

A worker that lost its lease (its heartbeat rows were removed by a reaper, or it could
not beat for ``dead_after - heartbeat_interval``) exits at once (75) without touching
its jobs' rows; a reaper that has itself just reconnected judges no one dead until it
has reached the database for a whole ``dead_after_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import psycopg
import reaper_tasks  # noqa: F401  (registers reaper_test.*)
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool
from rt_support import WorkerProcess, defer_rows, environment, events, query, wait_until, write_app
from test_reaper import add_running_jobs, add_worker, job_states, reaper_config

from jobsys.lanes import heartbeat
from jobsys.lanes.heartbeat import ProcessHeartbeat
from jobsys.lanes.reaper import reap_once


def test_worker_whose_rows_were_removed_exits_75_leaving_its_job_alone(
    db_url: str, tmp_path: Path
) -> None:
    env = environment(tmp_path, db_url, write_app(tmp_path))
    defer_rows(db_url, "rt.sleep", "q_base", [{"tag": "long", "seconds": 30}])
    worker = WorkerProcess(env, tmp_path, "--lane", "base")
    try:
        wait_until(lambda: [e for e in events(tmp_path) if e[0] == "start"], 20, "job start")
        # What a reaper does when it takes this worker for dead.
        query(db_url, "DELETE FROM procrastinate_workers")
        query(db_url, "DELETE FROM jobsys_worker_processes")
        started = time.monotonic()
        assert worker.wait(10) == 75, worker.output()
        assert time.monotonic() - started < 5  # within a couple of heartbeats (0.5 s)
        assert "fenced" in worker.output()
        # The worker wrote nothing for its job: still as it was, for the reaper to settle.
        assert query(db_url, "SELECT status::text, attempts FROM procrastinate_jobs") == [
            ("doing", 0)
        ]
        assert [e[0] for e in events(tmp_path)] == ["start"]
    finally:
        worker.kill()


async def test_heartbeat_silent_too_long_fences() -> None:
    fenced: list[str] = []
    # A real pool to a port where nothing listens: every beat fails for real.
    pool = AsyncConnectionPool(
        "postgresql://postgres@127.0.0.1:1/none", min_size=0, max_size=1, open=False, timeout=0.2
    )
    await pool.open(wait=False)
    try:
        beat = ProcessHeartbeat(pool, "p", 0.1, fence_after_seconds=0.5, on_fenced=fenced.append)
        stop = asyncio.Event()
        task = asyncio.create_task(beat.run(stop))
        deadline = time.monotonic() + 10
        while not fenced and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert heartbeat.database_continuity() == 0.0  # failing, so no continuity
        stop.set()
        await task
    finally:
        await pool.close()
    assert fenced and fenced[0].startswith("no heartbeat for")
    assert heartbeat.database_continuity() is None  # no heartbeat runs any more


async def test_reaper_waits_after_its_own_reconnect(db_url: str) -> None:
    config = reaper_config(heartbeat_interval_seconds=0.2, dead_after_seconds=1.5)
    async with await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, row_factory=dict_row
    ) as conn:
        dead = await add_worker(conn, heartbeat_age_seconds=600)
        (job,) = await add_running_jobs(conn, dead, [("reaper_test.safe", {"n": 1})])
        async with AsyncConnectionPool(db_url, min_size=1, open=False) as pool:
            beat = ProcessHeartbeat(pool, "reaper-host", 0.2)
            stop = asyncio.Event()
            task = asyncio.create_task(beat.run(stop))
            try:
                # Just (re)connected: every heartbeat looks stale, judge no one yet.
                await asyncio.sleep(0.5)
                continuity: Any = heartbeat.database_continuity()
                assert continuity is not None and continuity < 1.5
                result = await reap_once(conn, config)
                assert result.requeued == [] and result.failed == []
                assert (await job_states(conn, [job]))[job] == ("doing", 0)
                # After a whole dead_after of continuity, the dead worker is judged.
                await asyncio.sleep(1.6)
                result = await reap_once(conn, config)
                assert result.requeued == [job]
            finally:
                stop.set()
                await task
