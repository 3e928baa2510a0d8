"""The reaper against real database states: dead and live workers, racing reapers,
the stuck-job backstop, worker-process bookkeeping. Jobs are put in ``doing`` by
Procrastinate's own fetch function, under worker rows whose heartbeats the tests set.
(Real worker processes and ``kill -9``: ``test_reaper_processes.py``.)"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import psycopg
import pytest
import reaper_tasks  # noqa: F401  (registers reaper_test.*)
from conftest import CONFIG_DIR
from psycopg.rows import dict_row
from waiting import wait_until_async

from jobsys.config import Config
from jobsys.config import load as load_config_files
from jobsys.lanes.reaper import ReaperService, reap_once


def reaper_config(**worker: Any) -> Config:
    config = load_config_files(CONFIG_DIR)
    settings = config.queues.worker.model_copy(update=worker)
    return replace(config, queues=config.queues.model_copy(update={"worker": settings}))


@pytest.fixture
async def conn(db_url: str) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(
        db_url, autocommit=True, row_factory=dict_row
    ) as c:
        yield c


async def add_worker(conn: Any, heartbeat_age_seconds: float) -> int:
    cur = await conn.execute(
        "INSERT INTO procrastinate_workers (last_heartbeat) "
        "VALUES (now() - make_interval(secs => %s)) RETURNING id",
        (heartbeat_age_seconds,),
    )
    return int((await cur.fetchone())["id"])


async def add_running_jobs(
    conn: Any, worker_id: int, jobs: list[tuple[str, dict[str, Any]]], queue: str = "default"
) -> list[int]:
    """Defer ``jobs`` and let ``worker_id`` fetch them, as Procrastinate's worker does."""
    cur = await conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "SELECT %s, t.name, t.args FROM unnest(%s::text[], %s::jsonb[]) AS t(name, args) "
        "RETURNING id",
        (queue, [name for name, _ in jobs], [json.dumps(args) for _, args in jobs]),
    )
    ids = [int(r["id"]) for r in await cur.fetchall()]
    for _ in ids:
        await conn.execute("SELECT procrastinate_fetch_job_v2(%s, %s)", ([queue], worker_id))
    return ids


async def job_states(conn: Any, ids: list[int]) -> dict[int, tuple[str, int]]:
    cur = await conn.execute(
        "SELECT id, status::text AS status, attempts FROM procrastinate_jobs WHERE id = ANY(%s)",
        (ids,),
    )
    return {int(r["id"]): (r["status"], int(r["attempts"])) for r in await cur.fetchall()}


async def failures(conn: Any) -> dict[int, dict[str, Any]]:
    cur = await conn.execute("SELECT * FROM jobsys_failures ORDER BY id")
    return {int(r["job_id"]): r for r in await cur.fetchall()}


async def test_dead_worker_jobs_are_requeued_or_failed(db_url: str, conn: Any) -> None:
    dead = await add_worker(conn, heartbeat_age_seconds=120)
    safe, unsafe, unknown = await add_running_jobs(
        conn,
        dead,
        [
            ("reaper_test.safe", {"account_id": 7}),
            ("reaper_test.unsafe", {"account_id": 8, "token": "canary-s3cret"}),
            ("no.such.task", {"account_id": 9}),
        ],
    )
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute('LISTEN "procrastinate_queue_v1#default"')
        await listener.execute("LISTEN procrastinate_any_queue_v1")

        result = await reap_once(conn, reaper_config())

        notified = []
        async for note in listener.notifies(timeout=1.0):
            notified.append((note.channel, json.loads(note.payload)))
    assert result.requeued == [safe]
    assert sorted(result.failed) == [unsafe, unknown]
    assert result.workers_pruned == [dead]
    assert await job_states(conn, [safe, unsafe, unknown]) == {
        safe: ("todo", 1),
        unsafe: ("failed", 1),
        unknown: ("failed", 1),
    }
    payload = {"type": "job_inserted", "job_id": safe}
    assert sorted(notified, key=lambda n: n[0]) == [
        ("procrastinate_any_queue_v1", payload),
        ("procrastinate_queue_v1#default", payload),
    ]
    rows = await failures(conn)
    assert set(rows) == {safe, unsafe, unknown}
    for job_id, row in rows.items():
        assert (row["reason"], row["kind"], row["retryable"]) == ("worker_lost", "runtime", True)
        assert row["error_class"] == "jobsys.WorkerLost"
        assert row["lane"] == "base"
        assert row["attempt"] == 1
        assert row["worker"] == str(dead)
        assert row["will_retry"] is (job_id == safe)
    assert rows[unsafe]["args"] == {"account_id": 8, "token": "[REDACTED]"}
    assert rows[unsafe]["account_id"] == "8"
    assert re.fullmatch(
        rf"worker {dead} stopped sending heartbeats \(12\d s ago, dead after 30 s\) while "
        "running this job; failed: the task is not marked rerun_safe",
        rows[unsafe]["message"],
    )
    assert rows[unknown]["message"].endswith("; failed: the task is not registered in this process")
    assert rows[safe]["message"].endswith("; requeued: the task is rerun_safe")
    assert "canary-s3cret" not in json.dumps([dict(r) for r in rows.values()], default=str)


async def _wait_for_lock_wait(conn: Any, backend_pid: int) -> None:
    """Until ``backend_pid`` is blocked on a lock (deadline: a few seconds)."""

    async def blocked() -> bool:
        cur = await conn.execute(
            "SELECT wait_event_type = 'Lock' AS blocked FROM pg_stat_activity WHERE pid = %s",
            (backend_pid,),
        )
        row = await cur.fetchone()
        return row is not None and bool(row["blocked"])

    await wait_until_async(blocked, 5, f"backend {backend_pid} to wait on a lock", interval=0.01)


async def test_requeued_job_can_be_claimed_while_its_dead_worker_is_pruned(
    db_url: str, conn: Any
) -> None:
    """The wake-up is not wasted: a worker woken by the reaper's NOTIFY claims the job
    even while a prune of the dead worker row is still in flight.

    Pruning a worker sets ``worker_id`` NULL on the jobs that still point at it (the
    foreign key's ``ON DELETE SET NULL``), which row-locks them, and Procrastinate's
    fetch skips locked rows (``FOR UPDATE SKIP LOCKED``). The reaper prunes right after
    it requeues, so a woken worker used to find nothing and sleep until its next poll.
    Here the prune is held open deterministically: a second dead worker's finished job
    is locked by the test, so the same ``DELETE`` blocks there after it has already
    cascaded to the first worker's jobs (rows are deleted in insertion order).
    """
    dead = await add_worker(conn, heartbeat_age_seconds=300)
    dead_too = await add_worker(conn, heartbeat_age_seconds=300)
    live = await add_worker(conn, heartbeat_age_seconds=0)
    [job] = await add_running_jobs(conn, dead, [("reaper_test.safe", {})])
    cur = await conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, status, worker_id) "
        "VALUES ('elsewhere', 'reaper_test.safe', 'succeeded', %s) RETURNING id",
        (dead_too,),
    )
    finished = int((await cur.fetchone())["id"])
    async with (
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as reaper_conn,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener,
        await psycopg.AsyncConnection.connect(db_url) as blocker,
    ):
        await listener.execute('LISTEN "procrastinate_queue_v1#default"')
        await blocker.execute(
            "SELECT id FROM procrastinate_jobs WHERE id = %s FOR UPDATE", (finished,)
        )
        reap = asyncio.create_task(reap_once(reaper_conn, reaper_config()))
        try:
            woken = [n async for n in listener.notifies(timeout=5.0, stop_after=1)]
            assert [json.loads(n.payload) for n in woken] == [
                {"type": "job_inserted", "job_id": job}
            ]
            await _wait_for_lock_wait(conn, reaper_conn.info.backend_pid)
            # What a woken worker runs (Procrastinate's fetch_job query).
            cur = await conn.execute(
                "SELECT id FROM procrastinate_fetch_job_v2(%s, %s)", (["default"], live)
            )
            claimed = (await cur.fetchone())["id"]
        finally:
            await blocker.rollback()
            result = await asyncio.wait_for(reap, timeout=10)
    assert result.requeued == [job]
    assert sorted(result.workers_pruned) == [dead, dead_too]
    assert claimed == job, "the woken worker found the requeued job locked by the prune"


async def test_live_worker_is_never_reaped(conn: Any) -> None:
    live = await add_worker(conn, heartbeat_age_seconds=0)
    recent = await add_worker(conn, heartbeat_age_seconds=25)  # under dead_after (30 s)
    jobs = await add_running_jobs(conn, live, [("reaper_test.unsafe", {})])
    jobs += await add_running_jobs(conn, recent, [("reaper_test.safe", {})])
    result = await reap_once(conn, reaper_config())
    assert not result.did_something
    assert await job_states(conn, jobs) == {jobs[0]: ("doing", 0), jobs[1]: ("doing", 0)}
    assert await failures(conn) == {}


async def test_database_clock_decides(conn: Any) -> None:
    """``now`` replaces the database clock: an hour later, the same worker is dead."""
    worker = await add_worker(conn, heartbeat_age_seconds=0)
    [job] = await add_running_jobs(conn, worker, [("reaper_test.safe", {})])
    cur = await conn.execute("SELECT now() AS now")
    db_now = (await cur.fetchone())["now"]
    config = reaper_config()
    assert not (await reap_once(conn, config, now=db_now + timedelta(seconds=29))).requeued
    assert (await reap_once(conn, config, now=db_now + timedelta(hours=1))).requeued == [job]


async def test_job_whose_worker_row_is_gone_is_reaped(conn: Any) -> None:
    worker = await add_worker(conn, heartbeat_age_seconds=0)
    [job] = await add_running_jobs(conn, worker, [("reaper_test.unsafe", {})])
    # Procrastinate's prune deletes worker rows; the FK sets worker_id NULL.
    await conn.execute("DELETE FROM procrastinate_workers WHERE id = %s", (worker,))
    result = await reap_once(conn, reaper_config())
    assert result.failed == [job]
    assert "is gone" in (await failures(conn))[job]["message"]


async def test_abort_requested_before_death_ends_aborted(conn: Any) -> None:
    dead = await add_worker(conn, heartbeat_age_seconds=300)
    [job] = await add_running_jobs(conn, dead, [("reaper_test.safe", {})])
    await conn.execute("SELECT procrastinate_cancel_job_v1(%s, true, false)", (job,))
    result = await reap_once(conn, reaper_config())
    assert result.aborted == [job]
    assert (await job_states(conn, [job]))[job][0] == "aborted"


async def test_the_reapers_own_stuck_abort_is_a_timeout_failure_not_a_silent_abort(
    conn: Any,
) -> None:
    # A hung job: the stuck rule asks for an abort under its live worker, nothing
    # honours it, then the worker dies. Settled as failed with a timeout row.
    worker = await add_worker(conn, heartbeat_age_seconds=0)
    [job] = await add_running_jobs(conn, worker, [("reaper_test.slow", {})])  # timeout 0.5 s
    cur = await conn.execute("SELECT now() AS now")
    now = (await cur.fetchone())["now"]
    config = reaper_config(stuck_after_timeout_factor=3.0)
    assert (await reap_once(conn, config, now=now + timedelta(seconds=10))).stuck == [job]
    # The worker dies (no heartbeat past dead_after_seconds = 30 s).
    result = await reap_once(conn, config, now=now + timedelta(seconds=45))
    assert result.failed == [job] and result.aborted == []
    assert (await job_states(conn, [job]))[job][0] == "failed"
    row = (await failures(conn))[job]
    assert (row["kind"], row["reason"], row["error_class"]) == (
        "transient",
        "timeout",
        "jobsys.errors.JobTimeoutError",
    )
    assert row["retryable"] is True and row["will_retry"] is False
    assert "past 3 x its 0.5 s timeout" in row["message"]


async def test_job_that_keeps_killing_workers_is_failed_after_max_crash_requeues(
    conn: Any,
) -> None:
    config = reaper_config(max_crash_requeues=2)
    cur = await conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name) "
        "VALUES ('default', 'reaper_test.safe') RETURNING id"
    )
    job = int((await cur.fetchone())["id"])
    outcomes = []
    for _ in range(3):
        dead = await add_worker(conn, heartbeat_age_seconds=300)
        await conn.execute("SELECT procrastinate_fetch_job_v2(%s, %s)", (["default"], dead))
        result = await reap_once(conn, config)
        outcomes.append("requeued" if result.requeued == [job] else "failed")
    assert outcomes == ["requeued", "requeued", "failed"]
    cur = await conn.execute(
        "SELECT attempt, will_retry FROM jobsys_failures WHERE job_id = %s ORDER BY attempt",
        (job,),
    )
    assert [(r["attempt"], r["will_retry"]) for r in await cur.fetchall()] == [
        (1, True),
        (2, True),
        (3, False),
    ]
    assert (await job_states(conn, [job]))[job] == ("failed", 3)
    assert (await failures(conn))[job]["message"].endswith(
        "; failed: it lost its worker 3 times (max_crash_requeues = 2)"
    )


async def test_racing_reapers_handle_each_job_once(db_url: str, conn: Any) -> None:
    dead = await add_worker(conn, heartbeat_age_seconds=300)
    jobs = await add_running_jobs(
        conn,
        dead,
        [("reaper_test.safe", {"n": i}) for i in range(60)]
        + [("reaper_test.unsafe", {"n": i}) for i in range(60)],
    )
    config = reaper_config()
    async with (
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c1,
        await psycopg.AsyncConnection.connect(db_url, autocommit=True) as c2,
    ):
        r1, r2 = await asyncio.gather(reap_once(c1, config), reap_once(c2, config))
    handled_1 = set(r1.requeued + r1.failed)
    handled_2 = set(r2.requeued + r2.failed)
    assert not handled_1 & handled_2
    assert handled_1 | handled_2 == set(jobs)
    assert len(r1.requeued) + len(r2.requeued) == 60
    states = await job_states(conn, jobs)
    assert sorted(states.values()).count(("todo", 1)) == 60
    assert sorted(states.values()).count(("failed", 1)) == 60
    assert len(await failures(conn)) == 120


async def test_stuck_job_under_live_worker_gets_an_abort_request(
    conn: Any, caplog: pytest.LogCaptureFixture
) -> None:
    live = await add_worker(conn, heartbeat_age_seconds=0)
    [job] = await add_running_jobs(conn, live, [("reaper_test.slow", {})])  # timeout 0.5 s
    cur = await conn.execute("SELECT now() AS now")
    later = (await cur.fetchone())["now"] + timedelta(seconds=10)  # still alive (< 30 s)
    config = reaper_config(stuck_after_timeout_factor=3.0)
    caplog.set_level(logging.INFO, logger="jobsys.reaper")

    first = await reap_once(conn, config, now=later)
    assert first.stuck == [job]
    assert not first.requeued and not first.failed
    cur = await conn.execute(
        "SELECT status::text AS status, abort_requested FROM procrastinate_jobs WHERE id = %s",
        (job,),
    )
    assert await cur.fetchone() == {"status": "doing", "abort_requested": True}
    assert [r.action for r in caplog.records if hasattr(r, "action")].count("job_stuck") == 1

    caplog.clear()
    second = await reap_once(conn, config, now=later)
    assert second.stuck == [] and second.still_stuck == [job]
    assert not caplog.records  # reported once, not every pass


async def test_job_within_timeout_factor_is_left_alone(conn: Any) -> None:
    live = await add_worker(conn, heartbeat_age_seconds=0)
    [job] = await add_running_jobs(conn, live, [("reaper_test.slow", {})])
    cur = await conn.execute("SELECT now() AS now")
    soon = (await cur.fetchone())["now"] + timedelta(seconds=1.2)  # < 0.5 s x 3
    result = await reap_once(conn, reaper_config(stuck_after_timeout_factor=3.0), now=soon)
    assert result.stuck == [] and result.still_stuck == []
    assert job not in result.requeued


async def test_stale_worker_processes_are_marked_dead(conn: Any) -> None:
    await conn.execute(
        "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes, status, last_heartbeat) "
        "VALUES ('h:1:stale', 'h', 1, '{base}', 'running', now() - interval '5 minutes'), "
        "       ('h:2:drain', 'h', 2, '{base}', 'draining', now() - interval '5 minutes'), "
        "       ('h:3:fresh', 'h', 3, '{base}', 'running', now()), "
        "       ('h:4:stopped', 'h', 4, '{base}', 'stopped', now() - interval '5 minutes')"
    )
    result = await reap_once(conn, reaper_config())
    assert sorted(result.processes_marked_dead) == ["h:1:stale", "h:2:drain"]
    cur = await conn.execute(
        "SELECT id, status, stopped_at IS NOT NULL AS stopped "
        "FROM jobsys_worker_processes ORDER BY id"
    )
    assert [(r["id"], r["status"], r["stopped"]) for r in await cur.fetchall()] == [
        ("h:1:stale", "dead", True),
        ("h:2:drain", "dead", True),
        ("h:3:fresh", "running", False),
        ("h:4:stopped", "stopped", False),
    ]


async def test_quiet_pass_logs_nothing(conn: Any, caplog: pytest.LogCaptureFixture) -> None:
    live = await add_worker(conn, heartbeat_age_seconds=0)
    await add_running_jobs(conn, live, [("reaper_test.safe", {})])
    caplog.set_level(logging.DEBUG, logger="jobsys.reaper")
    result = await reap_once(conn, reaper_config())
    assert not result.did_something
    assert caplog.records == []


async def test_reaper_service_reaps_and_stops_promptly(db_url: str, conn: Any) -> None:
    from jobsys.lanes.execution import build_engine_app

    dead = await add_worker(conn, heartbeat_age_seconds=300)
    [job] = await add_running_jobs(conn, dead, [("reaper_test.unsafe", {})])
    service = ReaperService(reaper_config(reap_interval_seconds=0.2))
    app = build_engine_app(db_url, max_size=2)
    stop = asyncio.Event()
    async with app.open_async():
        running = asyncio.create_task(service.run(app, stop))

        async def reaped() -> bool:
            return (await job_states(conn, [job]))[job][0] != "doing"

        await wait_until_async(reaped, 10, "the service to reap the job")
        # The reap commits before its pass is counted: wait for the count too.
        await wait_until_async(lambda: service.passes >= 1, 5, "the reaping pass counted")
        passes = service.passes
        await wait_until_async(lambda: service.passes >= passes + 1, 5, "a further (quiet) pass")
        stop.set()
        await asyncio.wait_for(running, timeout=2)
    assert service.passes >= 2
    assert (await job_states(conn, [job]))[job][0] == "failed"


async def test_reap_task_runs_a_pass_on_a_real_worker(db_url: str, conn: Any) -> None:
    import jobsys.lanes.reap_task  # noqa: F401  (a BUILTIN_MODULES entry)
    from jobsys.lanes.execution import build_engine_app

    dead = await add_worker(conn, heartbeat_age_seconds=300)
    [job] = await add_running_jobs(conn, dead, [("reaper_test.safe", {})])
    await conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
        "VALUES ('maintenance', 'jobsys.reap', '{\"timestamp\": 1}')"
    )
    app = build_engine_app(db_url, max_size=2)
    async with app.open_async():
        await app.run_worker_async(
            queues=["maintenance"],
            wait=False,
            install_signal_handlers=False,
            listen_notify=False,
            additional_context={"config": reaper_config()},
        )
    assert (await job_states(conn, [job]))[job] == ("todo", 1)
    cur = await conn.execute(
        "SELECT status::text AS status FROM procrastinate_jobs WHERE task_name = 'jobsys.reap'"
    )
    assert (await cur.fetchone())["status"] == "succeeded"


async def test_a_dead_worker_row_stays_until_its_jobs_are_settled(conn: Any) -> None:
    """A pass that settles none of a dead worker's jobs (here: limit 0; in life, a worker
    crossing dead_after between the pass's settle and prune steps, or a job skipped as
    locked) must not prune its row: the prune set the job's worker_id NULL, and its
    worker_lost failure lost the host, pid and process that ran it (seen in CI)."""
    dead = await add_worker(conn, heartbeat_age_seconds=120)
    [job] = await add_running_jobs(conn, dead, [("reaper_test.safe", {})])
    first = await reap_once(conn, reaper_config(), limit=0)
    assert first.workers_pruned == []
    cur = await conn.execute("SELECT worker_id FROM procrastinate_jobs WHERE id = %s", (job,))
    assert (await cur.fetchone())["worker_id"] == dead
    second = await reap_once(conn, reaper_config())
    assert second.requeued == [job]
    assert second.workers_pruned == [dead]
