"""The reaper against real worker processes: ``kill -9`` mid-job, a live worker with a
long job, and how fast a listening worker picks up a recovered job.

Workers are plain Procrastinate workers (``reaper_worker_proc.py``) over
``jobsys.lanes.execution.build_engine_app``; every run of a test task records its start
and end in ``reaper_runs`` so overlaps can be checked.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row
from reaper_tasks import RUNS_DDL
from test_reaper import add_worker, reaper_config
from waiting import wait_until_async

from jobsys.lanes.reaper import reap_once

pytestmark = pytest.mark.slow

#: The integration tier's folder: the worker script and the tasks it imports.
HERE = Path(__file__).resolve().parents[1] / "integration"
HEARTBEAT_SECONDS = 1.0
DEAD_AFTER_SECONDS = 4.0


@pytest.fixture
async def conn(db_url: str, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    monkeypatch.setenv("REAPER_TEST_DB", db_url)
    async with await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, row_factory=dict_row
    ) as c:
        await c.execute(RUNS_DDL)
        yield c


@pytest.fixture
def spawn(db_url: str) -> Iterator[Any]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*, concurrency: int = 6, poll_seconds: float = 1.0) -> subprocess.Popen[bytes]:
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
            "REAPER_TEST_DB": db_url,
            "REAPER_CONCURRENCY": str(concurrency),
            "REAPER_HEARTBEAT_SECONDS": str(HEARTBEAT_SECONDS),
            "REAPER_DEAD_AFTER_SECONDS": str(DEAD_AFTER_SECONDS),
            "REAPER_POLL_SECONDS": str(poll_seconds),
        }
        proc = subprocess.Popen([sys.executable, str(HERE / "reaper_worker_proc.py")], env=env)
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


async def first_value(conn: Any, query: str, params: Any = None) -> Any:
    """The first column of ``query``'s first row (None when it has no row)."""
    cur = await conn.execute(query, params)
    row = await cur.fetchone()
    return next(iter(row.values())) if row else None


async def defer(conn: Any, task: str, args: str, count: int) -> list[int]:
    cur = await conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "SELECT 'default', %s, %s::jsonb FROM generate_series(1, %s) RETURNING id",
        (task, args, count),
    )
    return [int(r["id"]) for r in await cur.fetchall()]


async def test_kill_9_mid_job_every_job_settles_once(conn: Any, spawn: Any) -> None:
    config = reaper_config(
        heartbeat_interval_seconds=HEARTBEAT_SECONDS * 2, dead_after_seconds=DEAD_AFTER_SECONDS
    )
    safe = await defer(conn, "reaper_test.safe", '{"seconds": 600}', 3)
    unsafe = await defer(conn, "reaper_test.unsafe", '{"seconds": 600}', 3)
    doomed = spawn(concurrency=6)
    six = "SELECT count(*) = 6 FROM reaper_runs"
    await wait_until_async(lambda: first_value(conn, six), 20, six)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait(timeout=10)
    cur = await conn.execute("SELECT clock_timestamp() AS t")
    killed_at = (await cur.fetchone())["t"]
    survivor = spawn(concurrency=6)

    # Reap as every worker's service would, until nothing is left to run.
    deadline = time.monotonic() + 30
    while True:
        cur = await conn.execute(
            "SELECT count(*) AS n FROM procrastinate_jobs WHERE status IN ('todo', 'doing')"
        )
        if (await cur.fetchone())["n"] == 0:
            break
        await reap_once(conn, config)
        assert time.monotonic() < deadline, "jobs still not settled"
        await asyncio.sleep(0.25)

    cur = await conn.execute(
        "SELECT id, status::text AS status FROM procrastinate_jobs ORDER BY id"
    )
    states = {r["id"]: r["status"] for r in await cur.fetchall()}
    assert {states[j] for j in safe} == {"succeeded"}
    assert {states[j] for j in unsafe} == {"failed"}
    cur = await conn.execute("SELECT job_id, reason, will_retry FROM jobsys_failures")
    lost = {r["job_id"]: (r["reason"], r["will_retry"]) for r in await cur.fetchall()}
    assert {j: lost[j] for j in unsafe} == {j: ("worker_lost", False) for j in unsafe}

    cur = await conn.execute(
        "SELECT job_id, pid, started_at, coalesce(ended_at, %s) AS ended_at, "
        "ended_at IS NULL AS killed FROM reaper_runs ORDER BY job_id, started_at",
        (killed_at,),
    )
    runs: dict[int, list[dict[str, Any]]] = {}
    for r in await cur.fetchall():
        runs.setdefault(r["job_id"], []).append(r)
    for job in unsafe:
        assert [(r["pid"], r["killed"]) for r in runs[job]] == [(doomed.pid, True)]
    for job in safe:
        # Ran again exactly once, in the survivor, strictly after the first run ended.
        assert [(r["pid"], r["killed"]) for r in runs[job]] == [
            (doomed.pid, True),
            (survivor.pid, False),
        ]
        first, second = runs[job]
        assert first["ended_at"] <= second["started_at"], "two runs of one job overlapped"


async def test_live_worker_with_a_long_job_is_never_reaped(conn: Any, spawn: Any) -> None:
    config = reaper_config(
        heartbeat_interval_seconds=HEARTBEAT_SECONDS * 2, dead_after_seconds=DEAD_AFTER_SECONDS
    )
    [job] = await defer(conn, "reaper_test.unsafe", '{"seconds": 7}', 1)  # > dead_after
    spawn(concurrency=1)
    runs = "SELECT count(*) FROM reaper_runs"
    await wait_until_async(lambda: first_value(conn, runs), 20, runs)
    passes = 0
    while True:
        cur = await conn.execute(
            "SELECT status::text AS status FROM procrastinate_jobs WHERE id = %s", (job,)
        )
        if (await cur.fetchone())["status"] != "doing":
            break
        result = await reap_once(conn, config)
        passes += 1
        assert not (result.requeued or result.failed or result.stuck), result
        await asyncio.sleep(0.2)
    assert passes > 10
    cur = await conn.execute(
        "SELECT (SELECT status::text FROM procrastinate_jobs WHERE id = %(j)s) AS status, "
        "(SELECT count(*) FROM reaper_runs WHERE job_id = %(j)s) AS runs, "
        "(SELECT count(*) FROM jobsys_failures) AS failures",
        {"j": job},
    )
    assert await cur.fetchone() == {"status": "succeeded", "runs": 1, "failures": 0}


async def test_requeued_job_starts_promptly_on_a_jobsys_worker(
    conn: Any, db_url: str, tmp_path: Path
) -> None:
    """The reaper's NOTIFY wakes a real ``jobsys worker`` at once: with a 60 s poll,
    a pickup within two seconds cannot come from polling."""
    import importlib
    import sys

    from rt_support import WorkerProcess, defer_rows, environment, events, wait_until, write_app

    config_dir = write_app(tmp_path, poll=60.0)
    sys.path.insert(0, str(tmp_path))
    try:
        importlib.import_module("rt_tasks")  # the reaper reads rt.safe's rerun_safe here
    finally:
        sys.path.remove(str(tmp_path))
    worker = WorkerProcess(environment(tmp_path, db_url, config_dir), tmp_path, "--lane", "base")
    try:
        worker.wait_for_output("worker_ready")
        # Proof the worker's LISTEN path is up (a busy machine can make its start-up
        # round trip time out): an inserted job starts well before the 60 s poll.
        defer_rows(db_url, "rt.safe", "q_base", [{"tag": "probe"}])
        wait_until(lambda: [e for e in events(tmp_path) if e[:2] == ("end", "probe")], 30, "probe")
        dead = await add_worker(conn, heartbeat_age_seconds=300)
        # Inserted straight as ``doing`` (a ``todo`` insert would wake the worker itself).
        cur = await conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id, args) "
            "VALUES ('q_base', 'rt.safe', 'doing', %s, '{\"tag\": \"recovered\"}') "
            "RETURNING id",
            (dead,),
        )
        job = (await cur.fetchone())["id"]
        result = await reap_once(conn, reaper_config())
        assert result.requeued == [job]
        requeued_at = time.time()
        try:
            started = wait_until(
                lambda: [e for e in events(tmp_path) if e[:2] == ("start", "recovered")],
                30,
                "pickup",
            )
        except AssertionError as exc:
            state = await conn.execute("SELECT status, worker_id FROM procrastinate_jobs")
            raise AssertionError(
                f"{exc}; job rows {await state.fetchall()}; worker exit "
                f"{worker.proc.poll()}\n{worker.output()}"
            ) from None
        pickup = started[0][2] - requeued_at
        # Polling is every 60 s: anything under 5 s came from the NOTIFY.
        assert pickup < 5.0, f"recovered job took {pickup:.2f} s to start"
        succeeded = "SELECT status = 'succeeded' FROM procrastinate_jobs WHERE id = %s"
        await wait_until_async(lambda: first_value(conn, succeeded, (job,)), 20, succeeded)
    finally:
        worker.kill()
        # Other in-process tests must not see rt.* tasks (their queues are not theirs).
        from jobsys import tasks as task_registry

        for name in [n for n in task_registry.registry() if n.startswith("rt.")]:
            task_registry.unregister(name)
        sys.modules.pop("rt_tasks", None)
