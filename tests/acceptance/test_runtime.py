"""``jobsys worker`` as a real process: lanes, drain, signals, LISTEN, timeouts."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict
from rt_support import (
    WorkerProcess,
    defer_rows,
    environment,
    events,
    max_overlap,
    query,
    report,
    wait_until,
    write_app,
)

pytestmark = pytest.mark.slow


def job_statuses(db_url: str) -> dict[str, int]:
    return dict(query(db_url, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"))


def test_each_lane_runs_at_its_own_concurrency_then_drains(db_url: str, tmp_path: Path) -> None:
    env = environment(tmp_path, db_url, write_app(tmp_path))
    defer_rows(db_url, "rt.sleep", "q_base", [{"tag": f"b{i}", "seconds": 0.5} for i in range(6)])
    defer_rows(
        db_url, "rt.sleep_fast", "q_fast", [{"tag": f"f{i}", "seconds": 0.5} for i in range(9)]
    )
    worker = WorkerProcess(env, tmp_path, "--drain", "--lane", "base", "--lane", "fast")
    assert worker.wait(40) == 0, worker.output()
    evts = events(tmp_path)
    assert len([e for e in evts if e[0] == "end"]) == 15
    # Real overlapping jobs: each lane reaches its concurrency and never exceeds it.
    assert max_overlap(evts, "b") == 2
    assert max_overlap(evts, "f") == 3
    assert job_statuses(db_url) == {"succeeded": 15}
    row = query(db_url, "SELECT status, lanes FROM jobsys_worker_processes")
    assert row == [("stopped", ["base", "fast"])]


def test_a_lane_claims_its_free_slots_in_one_round_trip(db_url: str, tmp_path: Path) -> None:
    env = environment(tmp_path, db_url, write_app(tmp_path))
    defer_rows(
        db_url, "rt.sleep_fast", "q_fast", [{"tag": f"f{i}", "seconds": 0.3} for i in range(3)]
    )
    worker = WorkerProcess(env, tmp_path, "--drain", "--lane", "fast")
    assert worker.wait(40) == 0, worker.output()
    # A job's 'started' event is written by the statement that claims it, stamped
    # with that transaction's now(): the lane's three free slots, one statement.
    claims = query(
        db_url,
        "SELECT count(DISTINCT at), count(*) FROM procrastinate_events WHERE type = 'started'",
    )
    assert claims == [(1, 3)]
    assert max_overlap(events(tmp_path), "f") == 3


def test_the_next_job_of_a_lock_starts_when_the_first_finishes(db_url: str, tmp_path: Path) -> None:
    env = environment(tmp_path, db_url, write_app(tmp_path, poll=60.0))
    query(
        db_url,
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args) "
        "SELECT 'q_fast', 'rt.sleep_fast', 'account-7', jsonb_build_object('tag', 'l' || i, "
        "'seconds', 0.2) FROM generate_series(1, 3) i",
    )
    started = time.monotonic()
    worker = WorkerProcess(env, tmp_path, "--drain", "--lane", "fast")
    assert worker.wait(90) == 0, worker.output()
    # One at a time (one lock), each started as its predecessor finished: polling is
    # every 60 s, so a drain within 20 s owes nothing to it.
    assert max_overlap(events(tmp_path), "l") == 1
    assert time.monotonic() - started < 20
    assert job_statuses(db_url) == {"succeeded": 3}


def test_drain_with_nothing_to_do_exits_at_once(db_url: str, tmp_path: Path) -> None:
    env = environment(tmp_path, db_url, write_app(tmp_path))
    started = time.monotonic()
    worker = WorkerProcess(env, tmp_path, "--drain")
    assert worker.wait(20) == 0, worker.output()
    assert time.monotonic() - started < 10
    assert "drained" in worker.output()


def test_unknown_lane_exits_2_listing_lanes(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("worker", "--lane", "ai_fase_queue")
    assert result.exit_code == 2
    assert "unknown lane 'ai_fase_queue' (did you mean 'ai_face_queue'?)" in result.stderr
    assert "Lanes: base, ai, ai_visual_queue" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_lets_a_long_job_finish_once_and_exits_0(db_url: str, tmp_path: Path) -> None:
    env = environment(tmp_path, db_url, write_app(tmp_path, grace=10))
    # Runs longer than dead_after_seconds (2 s): heartbeats must continue while draining.
    defer_rows(db_url, "rt.sleep", "q_base", [{"tag": "long", "seconds": 3.0}])
    worker = WorkerProcess(env, tmp_path)
    try:
        wait_until(lambda: ("start", "long") in [e[:2] for e in events(tmp_path)], 20, "start")
        worker.signal(signal.SIGTERM)
        worker.wait_for_output("signal_stop")
        time.sleep(2.5)  # past dead_after_seconds, the job still running
        ages = query(
            db_url,
            "SELECT p.status, extract(epoch FROM now() - p.last_heartbeat), "
            "(SELECT max(extract(epoch FROM now() - w.last_heartbeat)) FROM procrastinate_workers w"
            " WHERE w.id = ANY(p.lane_worker_ids)) FROM jobsys_worker_processes p",
        )
        status, process_age, lane_age = ages[0]
        assert status == "draining"
        assert process_age < 2 and lane_age < 2, ages
        assert worker.wait(20) == 0, worker.output()
    finally:
        worker.kill()
    assert [e[:2] for e in events(tmp_path)] == [("start", "long"), ("end", "long")]
    assert job_statuses(db_url) == {"succeeded": 1}


def test_grace_expired_job_is_requeued_if_rerun_safe_else_failed(
    db_url: str, tmp_path: Path
) -> None:
    # The reaper's rule for a dead worker's jobs: a cut run may have done part of its
    # work, so only a rerun_safe task's job runs again; any other is failed for a human.
    env = environment(tmp_path, db_url, write_app(tmp_path, grace=0.5))
    defer_rows(db_url, "rt.sleep", "q_base", [{"tag": "cut", "seconds": 30}])
    defer_rows(db_url, "rt.safe_sleep", "q_base", [{"tag": "safe", "seconds": 30}])
    worker = WorkerProcess(env, tmp_path)
    try:
        wait_until(lambda: len(events(tmp_path)) == 2, 20, "both jobs start")
        worker.signal(signal.SIGTERM)
        assert worker.wait(20) == 0, worker.output()
    finally:
        worker.kill()
    assert query(
        db_url, "SELECT task_name, status::text, attempts FROM procrastinate_jobs ORDER BY id"
    ) == [("rt.sleep", "failed", 1), ("rt.safe_sleep", "todo", 1)]
    rows = query(
        db_url,
        "SELECT task, kind, reason, will_retry, retryable, message FROM jobsys_failures "
        "ORDER BY job_id",
    )
    assert [r[:5] for r in rows] == [
        ("rt.sleep", "runtime", "aborted", False, True),
        ("rt.safe_sleep", "transient", "aborted", True, True),
    ]
    assert rows[0][5] == (
        "still running at the end of the worker's 0.5 s shutdown grace period: failed, not "
        "requeued, as the task is not marked rerun_safe (the cut run may have done part of "
        "its work); `jobsys retry` runs it again"
    )
    assert rows[1][5] == (
        "still running at the end of the worker's 0.5 s shutdown grace period: requeued, "
        "the task is rerun_safe"
    )
    # Both rows are listed; only the failed cut (a human must decide) opens an issue: a
    # deploy that cuts a rerun_safe job must not raise an alert.
    assert query(
        db_url,
        "SELECT f.task, i.task FROM jobsys_failures f LEFT JOIN jobsys_issues i "
        "ON i.id = f.issue_id ORDER BY f.job_id",
    ) == [("rt.sleep", "rt.sleep"), ("rt.safe_sleep", None)]
    assert query(db_url, "SELECT task FROM jobsys_issues") == [("rt.sleep",)]
    assert "job_failed_on_shutdown" in worker.output()
    assert "aborting them (requeued if rerun_safe, else failed)" in worker.output()
    assert sorted(e[:2] for e in events(tmp_path)) == [("start", "cut"), ("start", "safe")]


def test_listener_killed_is_reestablished_and_jobs_start_promptly(
    db_url: str, tmp_path: Path
) -> None:
    env = environment(tmp_path, db_url, write_app(tmp_path, poll=30))
    dbname = conninfo_to_dict(db_url)["dbname"]  # also the embedded server's socket URL
    listeners = (
        "SELECT pid FROM pg_stat_activity WHERE application_name = 'jobsys-listener' "
        "AND datname = %s"
    )
    worker = WorkerProcess(env, tmp_path)
    try:
        worker.wait_for_output("worker_ready")
        (old_pid,) = wait_until(lambda: query(db_url, listeners, (dbname,)), 10, "listener")[0]
        query(db_url, "SELECT pg_terminate_backend(%s)", (old_pid,))
        new = wait_until(
            lambda: [r for r in query(db_url, listeners, (dbname,)) if r[0] != old_pid],
            5,
            "a new LISTEN backend",
        )
        assert len(new) == 1
        worker.wait_for_output("listener_restored")
        time.sleep(0.3)  # the LISTEN statements of the new connection
        deferred_at = time.time()
        defer_rows(db_url, "rt.sleep", "q_base", [{"tag": "after"}])
        started = wait_until(
            lambda: [e for e in events(tmp_path) if e[:2] == ("start", "after")], 10, "pickup"
        )
        report(
            "listen-connection-terminated",
            pickup_after_reconnect_s=started[0][2] - deferred_at,
            poll_interval_s=30.0,
        )
        # Polling is every 30 s: a pickup within 2 s came from NOTIFY.
        assert started[0][2] - deferred_at < 2.0
        worker.signal()
        assert worker.wait(20) == 0, worker.output()
    finally:
        worker.kill()


def test_async_job_past_its_timeout_is_cancelled_and_fails(db_url: str, tmp_path: Path) -> None:
    env = environment(tmp_path, db_url, write_app(tmp_path))
    defer_rows(db_url, "rt.async_hang", "q_timeout", [{"tag": "t"}])
    started = time.monotonic()
    worker = WorkerProcess(env, tmp_path, "--drain", "--lane", "timeouts")
    assert worker.wait(30) == 0, worker.output()
    assert time.monotonic() - started < 15
    # A timeout is a transient failure: recorded with reason `timeout`, then retried
    # later with backoff (the failures domain's retry policy), not run again at once.
    # Later than the failure, not than now(): the backoff is ~2 s, which a loaded
    # machine can spend between the worker's exit and this query.
    assert query(
        db_url,
        "SELECT status::text, attempts,"
        " scheduled_at > (SELECT max(occurred_at) + interval '1 second' FROM jobsys_failures)"
        " FROM procrastinate_jobs",
    ) == [("todo", 1, True)]
    assert query(
        db_url, "SELECT kind, reason, will_retry, error_class, message FROM jobsys_failures"
    ) == [
        (
            "transient",
            "timeout",
            True,
            "jobsys.errors.JobTimeoutError",
            "rt.async_hang ran past its timeout of 1 s and was cancelled",
        )
    ]
    assert [e[:2] for e in events(tmp_path)] == [("start", "t")]


def test_hung_sync_job_makes_the_worker_exit_nonzero(db_url: str, tmp_path: Path) -> None:
    # Grace 10 s: the exit must not wait for it (timeout 1 s + 5 s at most).
    env = environment(tmp_path, db_url, write_app(tmp_path, grace=10))
    defer_rows(db_url, "rt.sync_hang", "q_timeout", [{"tag": "s"}])
    defer_rows(db_url, "rt.safe_sleep", "q_base", [{"tag": "other", "seconds": 30}])
    worker = WorkerProcess(env, tmp_path, "--lane", "timeouts", "--lane", "base")
    try:
        assert worker.wait(30) == 70, worker.output()
        exited_at = time.time()
        (started_at,) = [
            at for event, tag, at in events(tmp_path) if (event, tag) == ("start", "s")
        ]
        assert exited_at - started_at < 1 + 5  # the lane's timeout (1 s) + 5 s
    finally:
        worker.kill()
    out = worker.output()
    assert "sync_job_timeout" in out and "rt.sync_hang[" in out and "jobs_abandoned" in out
    # Settled by the exiting worker: one timeout failure row, retried per policy (a
    # timeout is transient) and not before the process is gone.
    assert query(
        db_url,
        "SELECT status::text, attempts, scheduled_at > now() FROM procrastinate_jobs "
        "WHERE task_name = 'rt.sync_hang'",
    ) == [("todo", 1, True)]
    assert query(
        db_url,
        "SELECT kind, reason, will_retry, error_class FROM jobsys_failures "
        "WHERE task = 'rt.sync_hang'",
    ) == [("transient", "timeout", True, "jobsys.errors.JobTimeoutError")]
    # The other lane's job (rerun_safe) was requeued, not waited for.
    assert query(
        db_url, "SELECT status::text FROM procrastinate_jobs WHERE task_name = 'rt.safe_sleep'"
    ) == [("todo",)]
