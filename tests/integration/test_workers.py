"""``jobsys workers`` against real ``jobsys worker`` processes: what each process runs,
its heartbeat and state (running, draining, fenced, dead, stopped), and the host and
pid that failure rows record."""

from __future__ import annotations

import json
import signal
import socket
from pathlib import Path
from typing import Any

import pytest
from rt_support import WorkerProcess, defer_rows, environment, query, wait_until, write_app

pytestmark = pytest.mark.slow

FAILING_TASK = """

@task(queue="q_base", name="rt.fail")
async def fail(tag: str) -> None:
    raise ValueError(f"boom {tag}")
"""


@pytest.fixture
def app_dir(tmp_path: Path) -> Path:
    config = write_app(tmp_path, poll=0.2, grace=30.0)
    with (tmp_path / "rt_tasks.py").open("a") as f:
        f.write(FAILING_TASK)
    return config


@pytest.fixture
def start(tmp_path: Path, db_url: str, app_dir: Path) -> Any:
    started: list[WorkerProcess] = []

    def spawn(*lanes: str) -> WorkerProcess:
        args = [a for lane in lanes for a in ("--lane", lane)]
        worker = WorkerProcess(environment(tmp_path, db_url, app_dir), tmp_path, *args)
        started.append(worker)
        worker.wait_for_output("worker_ready")
        return worker

    yield spawn
    for worker in started:
        worker.kill()


def workers_json(cli: Any, db_url: str, app_dir: Path, *args: str) -> Any:
    env = {"JOBSYS_DATABASE_URL": db_url, "JOBSYS_CONFIG_DIR": str(app_dir)}
    result = cli("workers", *(args or ("list",)), "--json", env=env)
    assert result.exit_code == 0, result.stderr
    doc = result.json()
    return doc if args[:1] == ("show",) else doc["items"]  # type: ignore[index]


def job_status(db_url: str, job_id: int) -> str:
    return str(
        query(db_url, "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,))[0][0]
    )


def last_job_id(db_url: str) -> int:
    return int(query(db_url, "SELECT max(id) FROM procrastinate_jobs")[0][0])


def test_list_and_show_a_live_worker_with_its_running_job(
    cli: Any, db_url: str, app_dir: Path, start: Any
) -> None:
    worker = start("base", "fast")
    # Long enough to be seen running and draining; within the 30 s shutdown grace.
    defer_rows(db_url, "rt.sleep", "q_base", [{"tag": "long", "seconds": 12}])
    job = last_job_id(db_url)
    wait_until(lambda: job_status(db_url, job) == "doing", 20, "the job to start")

    def listed() -> Any:
        rows = workers_json(cli, db_url, app_dir)
        return rows if rows and rows[0]["running_jobs"] else None

    (row,) = wait_until(listed, 10, "the running job in the listing")
    assert row["host"] == socket.gethostname()
    assert row["pid"] == worker.proc.pid
    assert row["id"].startswith(f"{socket.gethostname()}:{worker.proc.pid}:")
    assert row["lanes"] == ["base", "fast"]
    assert row["concurrency"] == {"base": 2, "fast": 3}
    assert row["slots"] == 5
    assert row["state"] == "running"
    assert row["heartbeat_age_seconds"] < 2  # dead_after_seconds in rt_support's config
    [running] = row["running_jobs"]
    assert (running["id"], running["task"], running["queue"]) == (job, "rt.sleep", "q_base")
    assert running["running_seconds"] is not None and running["running_seconds"] >= 0

    # `jobsys workers --json` alone lists the same
    env = {"JOBSYS_DATABASE_URL": db_url, "JOBSYS_CONFIG_DIR": str(app_dir)}
    bare = cli("workers", "--json", env=env)
    assert [w["id"] for w in bare.json()["items"]] == [row["id"]]  # type: ignore[index]
    # show by host:pid, the way an operator reads it off `ps`
    shown = workers_json(cli, db_url, app_dir, "show", f"{row['host']}:{row['pid']}")
    assert shown["id"] == row["id"]
    assert [j["id"] for j in shown["running_jobs"]] == [job]
    # the table form names the job and the lanes with their slots
    table = cli("workers", "list", env=env)
    assert table.exit_code == 0, table.stderr
    assert "base(2), fast(3)" in table.stdout and "1/5" in table.stdout

    # draining after SIGTERM: still beating, still running its job
    worker.signal(signal.SIGTERM)
    wait_until(lambda: workers_json(cli, db_url, app_dir)[0]["state"] == "draining", 10, "draining")
    assert worker.wait(40) == 0
    assert job_status(db_url, job) == "succeeded"
    assert workers_json(cli, db_url, app_dir, "list", "--state", "running") == []
    [stopped] = workers_json(cli, db_url, app_dir, "list", "--state", "stopped")
    assert stopped["id"] == row["id"] and stopped["running_jobs"] == []


def test_unknown_and_ambiguous_worker_ids(cli: Any, db_url: str, app_dir: Path, start: Any) -> None:
    env = {"JOBSYS_DATABASE_URL": db_url, "JOBSYS_CONFIG_DIR": str(app_dir)}
    missing = cli("workers", "show", "nohost:1", env=env)
    assert missing.exit_code == 1 and "no worker process 'nohost:1'" in missing.stderr
    start("base")
    start("fast")
    both = cli("workers", "show", socket.gethostname(), env=env)
    assert both.exit_code == 2 and "matches 2 worker processes" in both.stderr
    bad_state = cli("workers", "list", "--state", "sleeping", env=env)
    assert bad_state.exit_code == 2 and "not a worker state" in bad_state.stderr


def test_failure_rows_record_the_host_and_pid_that_ran_the_job(
    cli: Any, db_url: str, app_dir: Path, start: Any
) -> None:
    worker = start("base")
    defer_rows(db_url, "rt.fail", "q_base", [{"tag": "x"}])
    job = last_job_id(db_url)
    wait_until(lambda: job_status(db_url, job) == "failed", 20, "the job to fail")
    rows = query(db_url, "SELECT host, pid, worker FROM jobsys_failures WHERE job_id = %s", (job,))
    [(host, pid, process_id)] = rows
    [listed] = workers_json(cli, db_url, app_dir)
    assert (host, pid, process_id) == (socket.gethostname(), worker.proc.pid, listed["id"])
    shown = workers_json(cli, db_url, app_dir, "show", listed["id"])
    assert [f["job_id"] for f in shown["recent_failures"]] == [job]


def test_a_killed_worker_is_dead_and_its_lost_job_names_it(
    cli: Any, db_url: str, app_dir: Path, start: Any
) -> None:
    worker = start("base")
    defer_rows(db_url, "rt.sleep", "q_base", [{"tag": "long", "seconds": 60}])
    job = last_job_id(db_url)
    wait_until(lambda: job_status(db_url, job) == "doing", 20, "the job to start")
    [before] = workers_json(cli, db_url, app_dir)
    worker.proc.send_signal(signal.SIGKILL)
    worker.wait(10)
    # dead once its last beat is older than dead_after_seconds (2 s), reaped or not
    [after] = wait_until(
        lambda: [w for w in workers_json(cli, db_url, app_dir) if w["state"] == "dead"],
        15,
        "the killed process to show as dead",
    )
    assert after["id"] == before["id"]

    # a reaper (a second worker's) settles the job; its failure row names the dead process
    start("fast")

    def lost_row() -> Any:
        return query(
            db_url,
            "SELECT host, pid, worker FROM jobsys_failures "
            "WHERE job_id = %s AND reason = 'worker_lost'",
            (job,),
        )

    [(host, pid, process_id)] = wait_until(lost_row, 60, "the worker_lost failure row")
    assert (host, pid, process_id) == (socket.gethostname(), worker.proc.pid, before["id"])


def test_a_worker_taken_for_dead_fences_itself_and_says_so(
    cli: Any, db_url: str, app_dir: Path, start: Any
) -> None:
    worker = start("base")
    [row] = workers_json(cli, db_url, app_dir)
    # What a reaper on another host does to a process it took for dead.
    query(
        db_url,
        "DELETE FROM procrastinate_workers WHERE id = ANY("
        "SELECT unnest(lane_worker_ids) FROM jobsys_worker_processes WHERE id = %s)",
        (row["id"],),
    )
    assert worker.wait(15) == 75  # EXIT_FENCED
    [fenced] = workers_json(cli, db_url, app_dir, "list", "--state", "fenced")
    assert fenced["id"] == row["id"]
    assert json.dumps(fenced)  # one JSON-ready document


def test_a_worker_fenced_while_its_database_is_unreachable_shows_as_fenced(
    cli: Any, db_url: str, app_dir: Path, start: Any, tmp_path: Path
) -> None:
    """Cut off from the database, a worker fences itself when its lease runs out and
    exits 75; it cannot write that anywhere but its home, so its row reads ``dead``
    until the next worker started with the same home reports the note: ``fenced``."""
    from chaos_proxy import ChaosProxy

    with ChaosProxy(db_url) as proxy:
        env = environment(tmp_path, proxy.url, app_dir)
        worker = WorkerProcess(env, tmp_path, "--lane", "base")
        try:
            worker.wait_for_output("worker_ready")
            [row] = workers_json(cli, db_url, app_dir)
            assert row["state"] == "running"
            proxy.drop()  # every connection cut, every new one refused
            assert worker.wait(20) == 75, worker.output()
        finally:
            worker.kill()
    assert "fenced" in worker.output()
    [seen] = wait_until(
        lambda: [w for w in workers_json(cli, db_url, app_dir) if w["state"] == "dead"],
        15,
        "the stale row to read dead",
    )
    assert seen["id"] == row["id"]
    notes = list((tmp_path / "home" / "fenced").glob("*.json"))
    assert len(notes) == 1 and row["id"] in notes[0].read_text()

    start("fast")  # the next worker of this home reports the note
    [fenced] = wait_until(
        lambda: workers_json(cli, db_url, app_dir, "list", "--state", "fenced"),
        15,
        "the fenced process to show as fenced",
    )
    assert fenced["id"] == row["id"] and fenced["stopped_at"] is not None
    assert not list((tmp_path / "home" / "fenced").glob("*.json"))
    states = {w["id"]: w["state"] for w in workers_json(cli, db_url, app_dir)}
    assert sorted(states.values()) == ["fenced", "running"]
