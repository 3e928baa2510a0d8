"""Batched acknowledgement (jobsys.engine.acks) under faults, with real worker
processes: nothing lost or run twice at once when a batch of outcomes is in flight
during a kill -9, a PostgreSQL restart (a throwaway cluster of this test's own, never
the shared server), or while the failures table is locked."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from rt_support import WorkerProcess, defer_rows, environment, events, query, wait_until, write_app

#: Tasks of the fault tests (appended to rt_support's task module), all on the
#: ``fast`` lane (concurrency 3).
ACK_TASKS_PY = """

@task(queue="q_fast", name="rt.ack_safe", rerun_safe=True)
async def ack_safe(tag: str, seconds: float = 0.0) -> None:
    _log("start", tag)
    await asyncio.sleep(seconds)
    _log("end", tag)

@task(queue="q_fast", name="rt.ack_fail")
async def ack_fail(tag: str, seconds: float = 0.0) -> None:
    _log("start", tag)
    await asyncio.sleep(seconds)
    _log("end", tag)
    raise RuntimeError("ack test failure")
"""

#: The lane's batched finish, blocked on a row lock (the batch is in flight).
BLOCKED_BATCH = (
    "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
    "AND wait_event_type = 'Lock' AND query LIKE '%%WITH outcome AS%%FOR NO KEY UPDATE%%'"
)


def write_ack_app(tmp: Path, **settings: float) -> Path:
    config = write_app(tmp, **settings)
    with (tmp / "rt_tasks.py").open("a") as f:
        f.write(ACK_TASKS_PY)
    return config


def start_with_jobs(
    tmp: Path, url: str, jobs: list[tuple[str, str]], **settings: float
) -> tuple[dict[str, str], WorkerProcess]:
    """One job of 1 s per (task, tag) on the ``fast`` lane, and a worker of that lane."""
    env = environment(tmp, url, write_ack_app(tmp, **settings))
    for task_name, tag in jobs:
        defer_rows(url, task_name, "q_fast", [{"tag": tag, "seconds": 1.0}])
    return env, WorkerProcess(env, tmp, "--lane", "fast")


def statuses(url: str) -> dict[str, str]:
    return {
        tag: status
        for tag, status in query(
            url, "SELECT args->>'tag', status::text FROM procrastinate_jobs WHERE args ? 'tag'"
        )
    }


def wait_for_events(tmp: Path, event: str, count: int) -> None:
    wait_until(lambda: sum(e[0] == event for e in events(tmp)) == count, 30, f"{count} {event}s")


def runs(tmp: Path, tag: str) -> list[tuple[str, float]]:
    return [(event, at) for event, t, at in events(tmp) if t == tag]


# --- fault scenarios (real worker processes) ---------------------------------------------


@pytest.mark.slow
def test_kill_9_with_a_batch_of_acks_in_flight_loses_no_job(db_url: str, tmp_path: Path) -> None:
    """Three jobs return while their rows are locked, so the lane's batch waits on the
    database; the worker is killed (kill -9) and the batch never commits. The jobs
    are settled by the dead-worker rules: the rerun-safe ones run again (after the
    first run, never beside it), the other one fails as ``worker_lost``; none is
    reported finished by the dead worker."""
    jobs = [("rt.ack_safe", "safe-1"), ("rt.ack_safe", "safe-2"), ("rt.sleep_fast", "unsafe")]
    env, doomed = start_with_jobs(tmp_path, db_url, jobs, heartbeat=0.5, dead_after=2)
    locker = psycopg.connect(db_url)
    try:
        wait_for_events(tmp_path, "start", 3)
        locker.execute("SELECT id FROM procrastinate_jobs FOR UPDATE").fetchall()
        wait_for_events(tmp_path, "end", 3)
        (blocked,) = wait_until(lambda: query(db_url, BLOCKED_BATCH), 10, "the batch in flight")
        # Every task returned, and the database still says doing: nothing reported.
        assert set(statuses(db_url).values()) == {"doing"}
        doomed.proc.send_signal(signal.SIGKILL)
        doomed.wait(10)
        query(db_url, "SELECT pg_terminate_backend(%s)", (blocked[0],))
        wait_until(lambda: not query(db_url, BLOCKED_BATCH), 10, "the batch's backend gone")
    finally:
        locker.rollback()
        locker.close()
        doomed.kill()
    assert set(statuses(db_url).values()) == {"doing"}  # the batch did not commit

    survivor = WorkerProcess(env, tmp_path, "--lane", "fast")
    try:
        wait_until(
            lambda: set(statuses(db_url).values()) <= {"succeeded", "failed"},
            60,
            "the dead worker's jobs settled",
        )
    finally:
        survivor.signal()
        survivor.wait(30)
    assert statuses(db_url) == {"safe-1": "succeeded", "safe-2": "succeeded", "unsafe": "failed"}
    lost = query(
        db_url,
        "SELECT j.args->>'tag', f.reason FROM jobsys_failures f "
        "JOIN procrastinate_jobs j ON j.id = f.job_id",
    )
    assert ("unsafe", "worker_lost") in lost
    assert [e for e, _ in runs(tmp_path, "unsafe")] == ["start", "end"]  # not run again
    for tag in ("safe-1", "safe-2"):
        timeline = runs(tmp_path, tag)
        assert [e for e, _ in timeline] == ["start", "end", "start", "end"], timeline
        assert timeline[1][1] <= timeline[2][1], "two runs of one job overlapped"


#: Port of the throwaway cluster (this work's own range, never the shared 5432).
OWN_CLUSTER_PORT = 16401


def _pg(*args: str) -> subprocess.CompletedProcess[bytes]:
    """Run a PostgreSQL server program, as ``postgres`` when we are root (initdb and
    the server refuse root)."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run([*prefix, *args], capture_output=True)


@pytest.fixture
def own_cluster() -> Iterator[tuple[Path, str]]:
    """A throwaway PostgreSQL cluster (initdb + pg_ctl, default settings) on
    :data:`OWN_CLUSTER_PORT`, which the test may restart: (its data folder, its URL)."""
    from jobsys.db import migrate

    if shutil.which("initdb") is None:
        pytest.skip("initdb not available")
    root = Path(tempfile.mkdtemp(prefix="jobsys-acks-"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    data = root / "data"
    done = _pg("initdb", "-D", str(data), "-U", "postgres", "-A", "trust")
    assert done.returncode == 0, done.stderr
    opts = f"-p {OWN_CLUSTER_PORT} -k {root} -c listen_addresses=127.0.0.1"
    started = _pg("pg_ctl", "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "start")
    assert started.returncode == 0, started.stderr
    url = f"postgresql://postgres@127.0.0.1:{OWN_CLUSTER_PORT}/postgres"
    try:
        migrate.upgrade(url)
        yield data, url
    finally:
        _pg("pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(root, ignore_errors=True)


@pytest.mark.slow
def test_postgres_restart_with_a_batch_of_acks_in_flight(
    own_cluster: tuple[Path, str], tmp_path: Path
) -> None:
    """The server restarts while a batch of outcomes waits on a row lock: the batch is
    rolled back with its connection, the worker rides the restart out (lease of 30 s)
    and writes the outcomes once the server is back; each job ran once and ends as its
    task said."""
    data, url = own_cluster
    jobs = [("rt.ack_safe", "ok-1"), ("rt.sleep_fast", "ok-2"), ("rt.ack_fail", "bad")]
    _, worker = start_with_jobs(tmp_path, url, jobs, heartbeat=1, dead_after=30)
    try:
        wait_for_events(tmp_path, "start", 3)
        with contextlib.closing(psycopg.connect(url)) as locker:
            locker.execute("SELECT id FROM procrastinate_jobs FOR UPDATE").fetchall()
            wait_until(lambda: query(url, BLOCKED_BATCH), 10, "the batch in flight")
            assert set(statuses(url).values()) == {"doing"}
            log = str(data.parent / "log")
            restarted = _pg("pg_ctl", "-D", str(data), "-l", log, "-m", "fast", "-w", "restart")
            assert restarted.returncode == 0, restarted.stderr
        wait_until(
            lambda: set(statuses(url).values()) <= {"succeeded", "failed"},
            60,
            "the outcomes written after the restart",
        )
        assert worker.proc.poll() is None, worker.output()  # rode it out
        worker.signal()
        assert worker.wait(30) == 0, worker.output()
    finally:
        worker.kill()
    assert statuses(url) == {"ok-1": "succeeded", "ok-2": "succeeded", "bad": "failed"}
    for tag in ("ok-1", "ok-2", "bad"):
        assert [e for e, _ in runs(tmp_path, tag)] == ["start", "end"]  # ran once
    failures = query(
        url,
        "SELECT j.args->>'tag', f.reason FROM jobsys_failures f "
        "JOIN procrastinate_jobs j ON j.id = f.job_id",
    )
    assert [tag for tag, _ in failures] == ["bad"]


@pytest.mark.slow
def test_failures_table_locked_while_batches_of_failures_are_acknowledged(
    db_url: str, tmp_path: Path
) -> None:
    """30 jobs fail and 30 succeed while ``jobsys_failures`` is locked: every job reaches
    its final state under the lock (capture spools, acknowledgements do not wait for
    it); once the lock is gone the spool is replayed: one failure row per failed job."""
    config = write_ack_app(tmp_path, heartbeat=0.5, dead_after=5)
    env = environment(tmp_path, db_url, config)
    defer_rows(db_url, "rt.ack_fail", "q_fast", [{"tag": f"bad-{i}"} for i in range(30)])
    defer_rows(db_url, "rt.ack_safe", "q_fast", [{"tag": f"ok-{i}"} for i in range(30)])
    locker = psycopg.connect(db_url)
    locker.execute("LOCK TABLE jobsys_failures IN ACCESS EXCLUSIVE MODE")
    worker = WorkerProcess(env, tmp_path, "--lane", "fast")
    try:
        final = wait_until(
            lambda: (s := statuses(db_url)) and set(s.values()) <= {"succeeded", "failed"} and s,
            60,
            "every job final under the lock",
        )
        assert sorted(final.values()) == ["failed"] * 30 + ["succeeded"] * 30
        assert query(
            db_url,
            "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' "
            "AND relation = 'jobsys_failures'::regclass",
        ) == [(1,)]
        locker.rollback()
        wait_until(
            lambda: query(db_url, "SELECT count(DISTINCT job_id) FROM jobsys_failures") == [(30,)],
            90,
            "30 failure rows replayed from the spool",
        )
        worker.signal()
        assert worker.wait(30) == 0, worker.output()
    finally:
        locker.close()
        worker.kill()
    assert query(db_url, "SELECT count(*) FROM jobsys_failures") == [(30,)]
    for i in range(30):
        assert [e for e, _ in runs(tmp_path, f"bad-{i}")] == ["start", "end"]
