"""No wedged jobs (issue 17), with real worker processes: a retry that collides with a
waiting sibling on the queueing lock, an outcome that cannot be written, and the
timeout of the lane that actually runs the job."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from rt_support import WorkerProcess, environment, events, query, wait_until, write_app

pytestmark = pytest.mark.slow

EXTRA_TASKS = """

from jobsys import TransientError

@task(queue="q_base", name="rt.fail_when_told")
async def fail_when_told(tag: str, flag: str) -> None:
    _log("start", tag)
    while not os.path.exists(flag):
        await asyncio.sleep(0.05)
    _log("end", tag)
    raise TransientError("upstream said no")

@task(queue="q_timeout", name="rt.sleep_declared_on_timeouts")
async def sleep_declared_on_timeouts(tag: str, seconds: float) -> None:
    _log("start", tag)
    await asyncio.sleep(seconds)
    _log("end", tag)
"""

REAP_EVERY = 1.0


def app(tmp: Path) -> Path:
    config = write_app(tmp, poll=0.5)
    queues = config / "queues.yaml"
    queues.write_text(queues.read_text() + f"  reap_interval_seconds: {REAP_EVERY}\n")
    with (tmp / "rt_tasks.py").open("a") as f:
        f.write(EXTRA_TASKS)
    return config


def defer(
    db_url: str,
    task: str,
    queue: str,
    args: dict[str, object],
    *,
    lock: str | None = None,
    queueing_lock: str | None = None,
) -> int:
    rows = query(
        db_url,
        "SELECT unnest(procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, %s, %s, %s::jsonb, "
        "NULL)::procrastinate_job_to_defer_v1]))",
        (queue, task, lock, queueing_lock, json.dumps(args)),
    )
    return int(rows[0][0])


def status(db_url: str, job_id: int) -> str:
    return str(
        query(db_url, "SELECT status::text FROM procrastinate_jobs WHERE id = %s", (job_id,))[0][0]
    )


def test_a_retry_colliding_with_its_waiting_sibling_is_merged_not_wedged(
    db_url: str, tmp_path: Path
) -> None:
    env = environment(tmp_path, db_url, app(tmp_path))
    flag = tmp_path / "fail-now"
    worker = WorkerProcess(env, tmp_path, "--lane", "base", "--log-format", "json")
    try:
        worker.wait_for_output('"worker_ready"', timeout=30)
        a = defer(
            db_url, "rt.fail_when_told", "q_base", {"tag": "A", "flag": str(flag)},
            lock="acct:1", queueing_lock="acct:1",
        )  # fmt: skip
        wait_until(lambda: [e for e in events(tmp_path) if e[:2] == ("start", "A")], 10, "A runs")
        # B waits behind A (same lock), with the same queueing lock: allowed while A runs.
        b = defer(db_url, "rt.safe", "q_base", {"tag": "B"}, lock="acct:1", queueing_lock="acct:1")
        assert status(db_url, b) == "todo"
        flag.touch()  # A fails; its retry would be a second waiting job of the lock
        failed_at = time.monotonic()
        wait_until(lambda: status(db_url, a) == "failed", REAP_EVERY + 5, "A settled")
        assert time.monotonic() - failed_at < REAP_EVERY + 5
        wait_until(lambda: status(db_url, b) == "succeeded", 10, "B done")
        assert worker.proc.poll() is None, worker.output()
        rows = query(
            db_url,
            "SELECT job_id, kind, will_retry, retry_state FROM jobsys_failures ORDER BY id",
        )
        assert len(rows) == 1, rows
        job_id, kind, will_retry, retry_state = rows[0]
        assert (job_id, kind, will_retry) == (a, "transient", False)
        assert retry_state["outcome"] == "merged_into_waiting_sibling"
        assert retry_state["sibling_job_id"] == b
        assert retry_state["queueing_lock"] == "acct:1"
        starts = Counter(tag for event, tag, _ in events(tmp_path) if event == "start")
        assert starts == {"A": 1, "B": 1}
        assert query(db_url, "SELECT id FROM procrastinate_jobs WHERE status = 'doing'") == []
        assert '"retry_merged"' in worker.output()
        assert "Task exception was never retrieved" not in worker.output()
        worker.signal()
        assert worker.wait(30) == 0, worker.output()
    finally:
        worker.kill()


def test_an_outcome_that_cannot_be_written_is_handed_to_the_reaper(
    db_url: str, tmp_path: Path
) -> None:
    # The database refuses this one job's success (a trigger): not a connection error,
    # so retrying forever would wedge it in `doing` under a live worker.
    query(
        db_url,
        """
        CREATE FUNCTION refuse_poison() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
          IF NEW.status = 'succeeded' AND NEW.args->>'tag' = 'poison' THEN
            RAISE EXCEPTION 'refused by test trigger';
          END IF;
          RETURN NEW;
        END $$;
        CREATE TRIGGER refuse_poison BEFORE UPDATE ON procrastinate_jobs
          FOR EACH ROW EXECUTE FUNCTION refuse_poison();
        """,
    )
    env = environment(tmp_path, db_url, app(tmp_path))
    worker = WorkerProcess(env, tmp_path, "--lane", "base", "--log-format", "json")
    try:
        worker.wait_for_output('"worker_ready"', timeout=30)
        job = defer(db_url, "rt.sleep", "q_base", {"tag": "poison"})
        wait_until(lambda: status(db_url, job) == "failed", 20, "the reaper settles it")
        assert worker.proc.poll() is None, worker.output()
        out = worker.output()
        assert out.count('"persist_failed"') == 3
        assert f'"job_id": {job}' in out
        assert '"job_handed_to_reaper"' in out
        # rt.sleep is not rerun_safe: failed with worker_lost for a human to decide.
        assert query(db_url, "SELECT reason, will_retry FROM jobsys_failures") == [
            ("worker_lost", False)
        ]
        assert query(db_url, "SELECT id FROM procrastinate_jobs WHERE status = 'doing'") == []
        worker.signal()
        assert worker.wait(30) == 0, worker.output()
    finally:
        worker.kill()


def test_a_job_deferred_to_another_lanes_queue_runs_under_that_lanes_timeout(
    db_url: str, tmp_path: Path
) -> None:
    # Declared on q_timeout (lane `timeouts`: 1 s); deferred to q_base (lane `base`:
    # the default 600 s) it may run 2 s; on its own queue it is cancelled at 1 s.
    env = environment(tmp_path, db_url, app(tmp_path))
    moved = defer(db_url, "rt.sleep_declared_on_timeouts", "q_base", {"tag": "m", "seconds": 2})
    home = defer(db_url, "rt.sleep_declared_on_timeouts", "q_timeout", {"tag": "h", "seconds": 2})
    worker = WorkerProcess(env, tmp_path, "--drain", "--lane", "base", "--lane", "timeouts")
    try:
        assert worker.wait(60) == 0, worker.output()
    finally:
        worker.kill()
    assert status(db_url, moved) == "succeeded"
    # (The timed-out one may have been retried and timed out again before the drain.)
    assert query(db_url, "SELECT DISTINCT job_id, reason FROM jobsys_failures") == [
        (home, "timeout")
    ]
    assert [tag for event, tag, _ in events(tmp_path) if event == "end"] == ["m"]


def test_a_job_doing_under_a_live_worker_that_does_not_run_it_is_settled(
    db_url: str, tmp_path: Path
) -> None:
    # A longer reaper period than the other tests', so that "within one period" leaves
    # room for the load of a shared machine while still being a bound that the old
    # hand-over-then-wait-for-the-next-pass path (up to 2 s + 2 periods) could break.
    period = 4.0
    config = app(tmp_path)
    queues = config / "queues.yaml"
    queues.write_text(
        queues.read_text().replace(
            f"reap_interval_seconds: {REAP_EVERY}", f"reap_interval_seconds: {period}"
        )
    )
    env = environment(tmp_path, db_url, config)
    worker = WorkerProcess(env, tmp_path, "--lane", "base", "--log-format", "json")
    try:
        worker.wait_for_output('"worker_ready"', timeout=30)
        (lane_worker,) = query(db_url, "SELECT id FROM procrastinate_workers")[0]
        # Orphaned mid-period (the lane's checks and the reaper's passes tick from about
        # worker_ready): a hand-over left to the next reaper pass settles it well over a
        # period later. The bound below holds for any phase.
        time.sleep(0.6 * period)
        # A job marked doing for the live lane that never reached its running set (what
        # an unhandled outcome write used to leave): a queue the lane does not serve, so
        # only this fetch can claim it.
        job = defer(db_url, "rt.sleep", "elsewhere", {"tag": "orphan"})
        query(db_url, "SELECT procrastinate_fetch_job_v2(%s, %s)", (["elsewhere"], lane_worker))
        assert status(db_url, job) == "doing"
        wait_until(lambda: status(db_url, job) == "failed", 3 * period, "settled")
        # Settled within one reaper period of being orphaned, by the database's clock:
        # from its `started` event (the claim that put it in `doing`) to its `failed` one.
        ((orphaned_for,),) = query(
            db_url,
            "SELECT extract(epoch FROM max(e.at) FILTER (WHERE e.type = 'failed')"
            " - max(e.at) FILTER (WHERE e.type = 'started'))::float8"
            " FROM procrastinate_events e WHERE e.job_id = %s",
            (job,),
        )
        assert orphaned_for is not None and 0 < orphaned_for < period, orphaned_for
        assert '"job_orphaned"' in worker.output()
        assert query(db_url, "SELECT job_id, reason FROM jobsys_failures") == [(job, "worker_lost")]
        assert events(tmp_path) == []  # never run
        assert worker.proc.poll() is None, worker.output()
    finally:
        worker.kill()


def test_a_hung_sync_job_with_a_10_s_timeout_leaves_one_failure_row(
    db_url: str, tmp_path: Path
) -> None:
    # The case: lane concurrency 2, timeout 10 s, default 30 s grace.
    config = app(tmp_path)
    queues = config / "queues.yaml"
    queues.write_text(queues.read_text().replace("timeout_seconds: 1", "timeout_seconds: 10"))
    queues.write_text(queues.read_text().replace("shutdown_grace_seconds: 10.0", ""))
    env = environment(tmp_path, db_url, config)
    job = defer(db_url, "rt.sync_hang", "q_timeout", {"tag": "s"})
    worker = WorkerProcess(env, tmp_path, "--lane", "timeouts", "--log-format", "json")
    try:
        assert worker.wait(40) == 70, worker.output()
        exited_at = time.time()
    finally:
        worker.kill()
    (started_at,) = [at for event, tag, at in events(tmp_path) if (event, tag) == ("start", "s")]
    assert exited_at - started_at < 15
    assert f"rt.sync_hang[{job}]" in worker.output()
    assert query(db_url, "SELECT job_id, reason, will_retry FROM jobsys_failures") == [
        (job, "timeout", True)
    ]
    # Retried per policy (a timeout is transient): waiting, not before the thread died.
    assert status(db_url, job) == "todo"
