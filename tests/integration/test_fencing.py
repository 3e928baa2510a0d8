"""Fencing and the reaper's outage guard: a job never runs in two processes at once.

A worker that lost its lease (its heartbeat rows were removed by a reaper, or no beat
it sent succeeded for ``dead_after - margin``) exits at once (75) without touching
its jobs' rows; a reaper that has itself just reconnected judges no one dead until it
has reached the database for a whole ``dead_after_seconds``.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import reaper_tasks  # noqa: F401  (registers reaper_test.*)
from chaos_proxy import ChaosProxy
from psycopg.rows import dict_row
from rt_support import WorkerProcess, defer_rows, environment, events, query, wait_until, write_app
from test_reaper import add_running_jobs, add_worker, job_states, reaper_config

from jobsys.lanes import heartbeat, store
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


async def test_heartbeat_that_cannot_connect_fences_when_its_lease_runs_out() -> None:
    fenced: list[tuple[float, str]] = []
    # A port where nothing listens: every beat fails for real, at once.
    beat = ProcessHeartbeat(
        "postgresql://postgres@127.0.0.1:1/none",
        "p",
        0.1,
        dead_after_seconds=0.8,
        on_fenced=lambda reason: fenced.append((time.monotonic(), reason)),
    )
    assert beat.lease is not None
    stop = asyncio.Event()
    task = asyncio.create_task(beat.run(stop))
    deadline = time.monotonic() + 10
    while not fenced and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert heartbeat.database_continuity() == 0.0  # failing, so no continuity
    stop.set()
    await task
    assert fenced and "no successful heartbeat" in fenced[0][1]
    # On the guard's timer: right when the lease (granted at start) ran out.
    late = fenced[0][0] - beat.lease.expires_at
    assert 0 <= late < 1.0, late
    assert heartbeat.database_continuity() is None  # no heartbeat runs any more


async def _registered(db_url: str, process_id: str) -> None:
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        await store.register_process(
            conn,
            {
                "id": process_id,
                "hostname": "h",
                "pid": 1,
                "lanes": ["base"],
                "concurrency": '{"base": 1}',
                "started_at": datetime.now(UTC),
            },
        )


async def test_frozen_network_fences_before_the_database_would_take_it_for_dead(
    db_url: str,
) -> None:
    """A frozen proxy (packets held, nothing refused): the beat hangs, the lease guard
    fences on its own timer before ``last_heartbeat + dead_after`` by the database."""
    dead_after = 2.0
    await _registered(db_url, "frozen")
    fenced: list[float] = []
    with ChaosProxy(db_url) as proxy:
        beat = ProcessHeartbeat(
            proxy.url,
            "frozen",
            0.2,
            dead_after_seconds=dead_after,
            on_fenced=lambda _: fenced.append(time.time()),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(beat.run(stop))
        try:
            await asyncio.sleep(1.0)
            assert beat.last_ok is not None and not fenced
            proxy.freeze()
            frozen_at = time.time()
            while not fenced and time.time() < frozen_at + 10:
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task
    (stamp,) = query(
        db_url,
        "SELECT extract(epoch FROM last_heartbeat)::float8 FROM jobsys_worker_processes "
        "WHERE id = 'frozen'",
    )[0]
    assert fenced, "the heartbeat never fenced behind a frozen network"
    # Strictly before any reaper may take it for dead (by the database's stamp).
    assert fenced[0] < stamp + dead_after, (fenced[0], stamp)


async def test_outage_shorter_than_the_lease_slack_is_ridden_out(db_url: str) -> None:
    await _registered(db_url, "rider")
    fenced: list[str] = []
    with ChaosProxy(db_url) as proxy:
        beat = ProcessHeartbeat(
            proxy.url, "rider", 0.3, dead_after_seconds=4.0, on_fenced=fenced.append
        )
        stop = asyncio.Event()
        task = asyncio.create_task(beat.run(stop))
        try:
            await asyncio.sleep(0.8)
            proxy.drop()
            await asyncio.sleep(1.5)
            assert beat.failing
            proxy.pass_()
            back = time.monotonic()
            while beat.failing and time.monotonic() < back + 5:
                await asyncio.sleep(0.02)
            # Retried quickly while the database was away: back within a retry or two.
            assert not beat.failing and time.monotonic() - back < 2.0
        finally:
            stop.set()
            await task
    assert fenced == []


async def test_reaper_waits_after_its_own_reconnect(db_url: str) -> None:
    config = reaper_config(heartbeat_interval_seconds=0.2, dead_after_seconds=1.5)
    async with await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, row_factory=dict_row
    ) as conn:
        dead = await add_worker(conn, heartbeat_age_seconds=600)
        (job,) = await add_running_jobs(conn, dead, [("reaper_test.safe", {"n": 1})])
        beat = ProcessHeartbeat(db_url, "reaper-host", 0.2)
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
