"""Real processes: three schedulers (one 90 s behind, one 90 s ahead) on a 1-second
entry, with a pause and a resume in the middle; fan-out workers killed with SIGKILL in
the middle of a batch and between batches."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from rt_support import report
from schedule_support import HERE, PROC, REPO, config_dir
from waiting import wait_until

from jobsys.db.connect import connect
from jobsys.schedule.fanout import FanoutSource, start_fanout

pytestmark = pytest.mark.slow

ONE_SECOND = """
defaults:
  catch_up: 3
entries:
  every_second:
    cron: "* * * * * *"
    task: demo.purge_expired_post_media
maintenance: optional  # a test schedule: no maintenance entries
"""


def spawn(*args: str, offset: float = 0.0) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")} | {
        "JOBSYS_CLOCK_OFFSET_SECONDS": str(offset),
        "PYTHONPATH": os.pathsep.join([str(HERE), str(REPO)]),
    }
    return subprocess.Popen(
        [sys.executable, str(PROC), *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def stop(proc: subprocess.Popen[str]) -> str:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    assert proc.returncode in (0, -signal.SIGTERM, -signal.SIGKILL), err[-2000:]
    return out


def query(db_url: str, sql: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def test_three_schedulers_with_skewed_clocks_pause_and_resume(
    db_url: str, tmp_path: Path, cli: Any
) -> None:
    folder = config_dir(tmp_path, ONE_SECOND)
    procs = [
        spawn("scheduler", db_url, str(folder), offset=offset) for offset in (0.0, -90.0, 90.0)
    ]
    base = ("--database-url", db_url, "--config-dir", str(folder))
    try:
        wait_until(
            lambda: query(db_url, "SELECT count(*) FROM jobsys_schedule_ticks")[0][0] >= 8,
            timeout=60,
            what="8 ticks",
        )
        assert cli(*base, "schedule", "pause", "every_second").exit_code == 0
        paused_at = query(db_url, "SELECT paused_at FROM jobsys_schedule_entries")[0][0]
        time.sleep(4)
        assert cli(*base, "schedule", "resume", "every_second").exit_code == 0
        resumed_at = query(db_url, "SELECT high_water FROM jobsys_schedule_entries")[0][0]
        wait_until(
            lambda: (
                query(
                    db_url,
                    "SELECT count(*) FROM jobsys_schedule_ticks WHERE tick_at > %s",
                    resumed_at,
                )[0][0]
                >= 8
            ),
            timeout=30,
            what="8 ticks after resume",
        )
    finally:
        outputs = [stop(p) for p in procs]
    rows = query(
        db_url,
        "SELECT t.tick_at, t.status, t.job_id, t.created_at, j.task_name"
        " FROM jobsys_schedule_ticks t LEFT JOIN procrastinate_jobs j ON j.id = t.job_id"
        " ORDER BY t.tick_at",
    )
    job_ids = [r[2] for r in rows]
    report(
        "three-schedulers-skewed-clocks",
        offsets_s="0/-90/+90",
        ticks=len(rows),
        duplicate_jobs=len(job_ids) - len(set(job_ids)),
        not_enqueued=sum(r[1] != "enqueued" for r in rows),
        max_enqueue_delay_s=max((r[3] - r[0]).total_seconds() for r in rows),
    )
    assert {r[1] for r in rows} == {"enqueued"}, "nothing missed, nothing skipped"
    assert all(r[4] == "demo.purge_expired_post_media" for r in rows)
    # Exactly once: one job per tick, and no job without its tick.
    assert len(set(job_ids)) == len(job_ids)
    assert query(db_url, "SELECT count(*) FROM procrastinate_jobs")[0][0] == len(rows)
    fired = [json.loads(line) for out in outputs for line in out.splitlines() if line]
    assert len(fired) == len(rows), "every process reported only the ticks it enqueued"
    # Each tick enqueued on time by the database clock (a process trusting its own
    # clock would enqueue 90 s early or late).
    assert all(timedelta(0) <= r[3] - r[0] < timedelta(seconds=3) for r in rows)
    before = [r[0] for r in rows if r[0] <= paused_at]
    after = [r[0] for r in rows if r[0] > resumed_at]
    assert len(before) + len(after) == len(rows), "no tick while paused"
    for run in (before, after):
        assert run == [run[0] + timedelta(seconds=i) for i in range(len(run))], "none missed"


# --- fan-out under SIGKILL ------------------------------------------------------------

SLEEP_ON = """
CREATE FUNCTION test_stall() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN PERFORM pg_sleep(120); RETURN NEW; END $$;
"""


def stalled_backend(db_url: str) -> int | None:
    rows = query(
        db_url,
        "SELECT pid FROM pg_stat_activity WHERE wait_event = 'PgSleep'"
        " AND datname = current_database()",
    )
    return rows[0][0] if rows else None


def kill_in_trigger(db_url: str, proc: subprocess.Popen[str], trigger: str) -> None:
    """SIGKILL ``proc`` while its transaction sleeps in ``trigger``, then end that
    transaction the way Postgres does when a client dies (rollback)."""
    pid = wait_until(lambda: stalled_backend(db_url), timeout=60, what="a stalled batch")
    proc.kill()
    proc.communicate(timeout=10)  # reap it and close its pipes
    query(db_url, "SELECT pg_terminate_backend(%s)", pid)
    query(db_url, f"DROP TRIGGER {trigger} ON procrastinate_jobs")


def requeue_orphans(db_url: str) -> int:
    """What the reaper does for a dead worker's rerun-safe jobs: back to todo."""
    rows = query(
        db_url,
        "SELECT procrastinate_retry_job_v2(id, now(), NULL, NULL, NULL)"
        " FROM procrastinate_jobs WHERE status = 'doing'",
    )
    return len(rows)


def run_state(db_url: str, run_id: int) -> tuple[Any, ...]:
    return query(
        db_url,
        "SELECT status, cursor, batches_done, items_enqueued FROM jobsys_fanout_runs WHERE id = %s",
        run_id,
    )[0]


def test_fanout_survives_sigkill_mid_batch_and_between_batches(db_url: str) -> None:
    query(db_url, "CREATE TABLE accounts (id bigint primary key)")
    query(db_url, "INSERT INTO accounts SELECT generate_series(1, 10000)")
    query(db_url, SLEEP_ON)

    async def start() -> int:
        async with connect(db_url) as conn:
            started = await start_fanout(
                conn,
                entry="kill",
                source=FanoutSource("accounts"),
                task="tests.item",
                queue="items",
                batch_size=500,
                batch_queue="batches",
                tick_at=datetime(2026, 1, 1, tzinfo=UTC),
            )
        assert started.run_id is not None
        return started.run_id

    run_id = asyncio.run(start())
    # 1. Mid-batch: the batch inserting item 5250 stalls, then its worker is killed.
    query(
        db_url,
        "CREATE TRIGGER mid BEFORE INSERT ON procrastinate_jobs FOR EACH ROW"
        " WHEN (NEW.task_name = 'tests.item' AND NEW.args->>'account_id' = '5250')"
        " EXECUTE FUNCTION test_stall()",
    )
    worker = spawn("worker", db_url, "batches")
    kill_in_trigger(db_url, worker, "mid")
    assert run_state(db_url, run_id) == ("running", 5000, 10, 5000), "batch 11 rolled back"
    assert requeue_orphans(db_url) == 1
    # 2. Between batches: batch at cursor 7000 committed, its worker dies before
    #    Procrastinate marks the job succeeded, so the job will run a second time.
    query(
        db_url,
        "CREATE TRIGGER between BEFORE UPDATE OF status ON procrastinate_jobs FOR EACH ROW"
        " WHEN (NEW.task_name = 'jobsys.fanout_batch' AND NEW.status = 'succeeded'"
        " AND OLD.args->>'cursor' = '7000') EXECUTE FUNCTION test_stall()",
    )
    worker = spawn("worker", db_url, "batches")
    kill_in_trigger(db_url, worker, "between")
    assert run_state(db_url, run_id) == ("running", 7500, 15, 7500)
    assert requeue_orphans(db_url) == 1
    # 3. Resume: the re-run of batch 7000 is a no-op; the continuation finishes the run.
    worker = spawn("worker", db_url, "batches")
    try:
        wait_until(lambda: run_state(db_url, run_id)[0] == "finished", timeout=60, what="finish")
    finally:
        stop(worker)
    assert run_state(db_url, run_id) == ("finished", 10000, 20, 10000)
    ids = query(
        db_url,
        "SELECT (args->>'account_id')::bigint FROM procrastinate_jobs"
        " WHERE task_name = 'tests.item' ORDER BY 1",
    )
    report(
        "fanout-sigkill-mid-batch-and-between",
        items=len(ids),
        distinct_items=len({r[0] for r in ids}),
        lost_items=10000 - len({r[0] for r in ids}),
        kills=2,
    )
    assert [r[0] for r in ids] == list(range(1, 10001)), "each id exactly once"
    statuses = query(
        db_url,
        "SELECT status::text, count(*) FROM procrastinate_jobs"
        " WHERE task_name = 'jobsys.fanout_batch' GROUP BY 1",
    )
    assert dict(statuses) == {"succeeded": 20}, "20 batches, no continuation doubled"
    starts = query(
        db_url,
        "SELECT j.args->>'cursor', count(*) FROM procrastinate_jobs j"
        " JOIN procrastinate_events e ON e.job_id = j.id AND e.type = 'started'"
        " WHERE j.task_name = 'jobsys.fanout_batch' GROUP BY 1 HAVING count(*) > 1",
    )
    assert dict(starts) == {"5000": 2, "7000": 2}, "both killed batches ran again"
