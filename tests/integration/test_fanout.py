"""Batched fan-out against a real Postgres, in-process: 10,000 rows in 20 batches with
each id once, duplicate batch executions are no-ops, racing ticks make one run,
overlap policies, `jobsys fanout` and `jobsys schedule run` JSON contracts, retention."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from schedule_support import config_dir

from jobsys import task
from jobsys.config.models import Retention
from jobsys.db.connect import connect
from jobsys.schedule.fanout import FanoutSource, run_batch, start_fanout
from jobsys.schedule.retention import purge

SOURCE = FanoutSource("accounts", "id", "active")
ITEM = "tests.fanout_item"


def make_accounts(db_url: str, n: int, *, inactive_every: int = 0) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id bigint primary key, active boolean not null)")
        conn.execute(
            "INSERT INTO accounts SELECT i, NOT (%s > 0 AND i %% %s = 0)"
            " FROM generate_series(1, %s) i",
            (inactive_every, max(inactive_every, 1), n),
        )


def scalar(db_url: str, query: str, *params: Any) -> Any:
    with psycopg.connect(db_url) as conn:
        row = conn.execute(query, params).fetchone()
        assert row is not None
        return row[0]


async def drain(conn: Any, run_id: int) -> int:
    """Run the run's pending batch jobs in id order, as a worker would; batches run."""
    done = 0
    while True:
        cur = await conn.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = ("
            " SELECT id FROM procrastinate_jobs WHERE task_name = 'jobsys.fanout_batch'"
            " AND status = 'todo' AND (args->>'run_id')::bigint = %s ORDER BY id LIMIT 1)"
            " RETURNING args",
            (run_id,),
        )
        row = await cur.fetchone()
        if row is None:
            return done
        await run_batch(conn, run_id, row["args"]["cursor"])
        done += 1


async def test_ten_thousand_rows_in_twenty_batches_each_id_once(db_url: str) -> None:
    make_accounts(db_url, 10_000)
    async with connect(db_url) as conn:
        started = await start_fanout(
            conn,
            entry="e",
            source=SOURCE,
            task=ITEM,
            queue="sync",
            batch_size=500,
            args={"mode": "full"},
        )
        assert started.status == "running"
        assert started.run_id is not None
        # A duplicate execution of the first batch after it ran changes nothing.
        first = await run_batch(conn, started.run_id, None)
        assert first.items == 500 and first.cursor == 500
        again = await run_batch(conn, started.run_id, None)
        assert again.duplicate
        assert await drain(conn, started.run_id) == 20  # the 19 left + the stale first job
    ids = scalar(
        db_url,
        "SELECT array_agg((args->>'account_id')::bigint ORDER BY id) FROM procrastinate_jobs"
        " WHERE task_name = %s",
        ITEM,
    )
    assert ids == list(range(1, 10_001))
    assert (
        scalar(
            db_url,
            "SELECT count(DISTINCT args->>'mode') FROM procrastinate_jobs"
            " WHERE task_name = %s AND args->>'mode' = 'full'",
            ITEM,
        )
        == 1
    )
    with psycopg.connect(db_url) as c:
        run = c.execute(
            "SELECT status, batches_done, items_enqueued, cursor, finished_at IS NOT NULL"
            " FROM jobsys_fanout_runs WHERE id = %s",
            (started.run_id,),
        ).fetchone()
    assert run == ("finished", 20, 10_000, 10_000, True)


async def test_fanout_deferrals_are_announced_to_the_dashboard(db_url: str) -> None:
    """Each batch announces its items and its continuation on ``jobs_changed``."""
    make_accounts(db_url, 1_200)
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN jobsys_events")
        async with connect(db_url) as conn:
            started = await start_fanout(
                conn, entry="e", source=SOURCE, task=ITEM, queue="sync", batch_size=500
            )
            assert started.run_id is not None
            assert await drain(conn, started.run_id) == 3
        deferred = 0
        async for note in listener.notifies(timeout=1.0):
            body = json.loads(note.payload)
            if body["topic"] == "jobs_changed":
                deferred += body["deferred"]
    assert deferred == 1_200 + 3  # every item, and the first batch job and 2 continuations


async def test_filter_and_queue_of_items(db_url: str) -> None:
    make_accounts(db_url, 1000, inactive_every=10)
    async with connect(db_url) as conn:
        started = await start_fanout(
            conn,
            entry="e",
            source=SOURCE,
            task=ITEM,
            queue="profiles",
            batch_size=300,
            item_arg="profile_id",
            priority=2,
        )
        assert started.run_id is not None
        await drain(conn, started.run_id)
    assert (
        scalar(
            db_url,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s"
            " AND queue_name = 'profiles' AND priority = 2 AND args ? 'profile_id'",
            ITEM,
        )
        == 900
    )
    assert scalar(db_url, "SELECT batches_done FROM jobsys_fanout_runs") == 3


async def test_two_racing_ticks_create_one_run(db_url: str) -> None:
    make_accounts(db_url, 10)
    tick = datetime(2026, 1, 1, 12, tzinfo=UTC)
    async with connect(db_url) as a, connect(db_url) as b:
        results = await asyncio.gather(
            *(
                start_fanout(
                    conn,
                    entry="race",
                    source=SOURCE,
                    task=ITEM,
                    queue="sync",
                    batch_size=5,
                    tick_at=tick,
                )
                for conn in (a, b)
            )
        )
    assert sorted(r.status for r in results) == ["existing", "running"]
    assert results[0].run_id == results[1].run_id
    assert scalar(db_url, "SELECT count(*) FROM jobsys_fanout_runs") == 1
    assert scalar(db_url, "SELECT count(*) FROM procrastinate_jobs") == 1


async def test_overlap_skip_and_queue(db_url: str) -> None:
    make_accounts(db_url, 20)
    kwargs: dict[str, Any] = {"source": SOURCE, "task": ITEM, "queue": "sync", "batch_size": 10}
    async with connect(db_url) as conn:
        first = await start_fanout(conn, entry="s", **kwargs)
        skipped = await start_fanout(conn, entry="s", **kwargs)
        assert (skipped.status, skipped.run_id, skipped.blocked_by) == (
            "skipped",
            None,
            first.run_id,
        )
        one = await start_fanout(conn, entry="q", overlap="queue", **kwargs)
        queued = await start_fanout(conn, entry="q", overlap="queue", **kwargs)
        third = await start_fanout(conn, entry="q", overlap="queue", **kwargs)
        assert queued.status == "queued" and queued.batch_job_id is None
        assert third.status == "skipped"  # at most one run waits
        assert one.run_id is not None and queued.run_id is not None
        await drain(conn, one.run_id)  # finishing the running run starts the queued one
        status = scalar(
            db_url, "SELECT status FROM jobsys_fanout_runs WHERE id = %s", queued.run_id
        )
        assert status == "running"
        await drain(conn, queued.run_id)
        assert first.run_id is not None
        await drain(conn, first.run_id)
    assert (
        scalar(
            db_url,
            "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s"
            " AND args->>'account_id' = '7'",
            ITEM,
        )
        == 3
    )  # runs of s, q, q


FANOUT_YAML = """
entries:
  accounts_fanout:
    cron: "0 * * * *"
    fanout:
      table: accounts
      where: active
      batch_size: 4
      task: demo.process_account
      args: {token: sekret-value}
  purge:
    cron: "0 * * * *"
    task: demo.purge_expired_post_media
maintenance: optional  # a test schedule: no maintenance entries
"""


def test_cli_contracts(db_url: str, tmp_path: Path, cli: Any) -> None:
    make_accounts(db_url, 10)
    base = ("--database-url", db_url, "--config-dir", str(config_dir(tmp_path, FANOUT_YAML)))
    ran = cli(*base, "schedule", "run", "purge", "--json")
    assert ran.exit_code == 0, ran.stderr
    job = ran.json()
    assert (
        scalar(db_url, "SELECT task_name FROM procrastinate_jobs WHERE id = %s", job["job_id"])
        == "demo.purge_expired_post_media"
    )
    assert (
        scalar(db_url, "SELECT status FROM jobsys_schedule_ticks WHERE job_id = %s", job["job_id"])
        == "manual"
    )
    ran = cli(*base, "schedule", "run", "accounts_fanout", "--json")
    assert ran.exit_code == 0, ran.stderr
    run_id = ran.json()["run_id"]
    refused = cli(*base, "schedule", "run", "accounts_fanout")
    assert refused.exit_code == 2
    assert f"fanout show {run_id}" in refused.stderr

    listed = cli(*base, "schedule", "list", "--json")
    assert listed.exit_code == 0
    entries = {e["name"]: e for e in listed.json()["items"]}
    keys = ("name", "cron", "timezone", "task", "queue", "next_run_at", "last_run_at", "paused")
    for key in keys:
        assert key in entries["purge"]
    assert entries["purge"]["last_status"] == "todo"
    assert entries["purge"]["last_run_at"].endswith("Z")
    assert entries["accounts_fanout"]["last_status"] == "run running"
    assert entries["accounts_fanout"]["task"] == "demo.process_account"

    runs = cli(*base, "fanout", "list", "--entry", "accounts_fanout", "--json")
    assert [r["id"] for r in runs.json()["items"]] == [run_id]
    shown = cli(*base, "fanout", "show", str(run_id), "--json")
    data = shown.json()
    assert (data["entry"], data["status"], data["batches_done"], data["remaining"]) == (
        "accounts_fanout",
        "running",
        0,
        10,
    )
    assert data["progress_percent"] == 0.0
    # Mid-way (4 of the 10 rows enqueued): how far the run has come, in percent.
    query = "UPDATE jobsys_fanout_runs SET cursor = 4, items_enqueued = 4 WHERE id = %s"
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(query, (run_id,))
    mid = cli(*base, "fanout", "show", str(run_id), "--json").json()
    assert (mid["items_enqueued"], mid["remaining"], mid["progress_percent"]) == (4, 6, 40.0)
    assert "progress percent  40.0" in cli(*base, "fanout", "show", str(run_id)).stdout
    assert data["spec"]["args"]["token"] == "[REDACTED]"
    assert "sekret-value" not in shown.stdout

    for args, code in (
        (("schedule", "run", "purg"), 2),
        (("schedule", "pause", "nope"), 2),
        (("schedule", "resume", "accounts_fanou"), 2),
        (("fanout", "show", "999"), 1),
        (("fanout", "list", "--status", "done"), 2),
        (("fanout", "show", "abc"), 2),
    ):
        result = cli(*base, *args)
        assert result.exit_code == code, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert "Did you mean 'purge'?" in cli(*base, "schedule", "run", "purg").stderr
    assert scalar(db_url, "SELECT count(*) FROM jobsys_schedule_ticks") == 2


async def test_retention_deletes_old_finished_jobs_in_batches(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args)"
            " SELECT 'sync', 't', s::procrastinate_job_status, jsonb_build_object('n', i)"
            " FROM generate_series(1, 7) i,"
            " unnest(ARRAY['succeeded','failed','cancelled','aborted','todo']) s"
        )
        c.execute(
            "INSERT INTO procrastinate_events (job_id, type, at)"
            " SELECT id, 'deferred', now() - interval '100 days' FROM procrastinate_jobs"
            " WHERE (args->>'n')::int <= 5"
        )
        c.execute(
            "INSERT INTO procrastinate_events (job_id, type, at)"
            " SELECT id, 'deferred', now() FROM procrastinate_jobs WHERE (args->>'n')::int > 5"
        )
        # Failed job n=1 is still referenced by a recent failure row: kept.
        c.execute(
            "INSERT INTO jobsys_failures"
            " (job_id, task, queue, attempt, error_class, kind, retryable)"
            " SELECT id, 't', 'sync', 1, 'E', 'runtime', true FROM procrastinate_jobs"
            " WHERE status = 'failed' AND args->>'n' = '1'"
        )
        c.execute(
            "INSERT INTO jobsys_schedule_ticks (name, tick_at, status) VALUES"
            " ('a', now() - interval '100 days', 'enqueued'),"
            " ('a', now() - interval '99 days', 'missed'),"
            " ('a', now() - interval '98 days', 'enqueued'),"
            " ('b', now() - interval '100 days', 'enqueued')"
        )
    async with connect(db_url) as conn:
        result = await purge(conn, Retention(batch_size=2))
    assert result.deleted["succeeded_jobs"] == 5
    assert result.deleted["failed_jobs"] == 4
    assert result.deleted["cancelled_jobs"] == 10
    assert result.deleted["schedule_ticks"] == 2  # each entry keeps its latest run
    left = scalar(
        db_url,
        "SELECT array_agg(status || ':' || (args->>'n') ORDER BY status, args->>'n')"
        " FROM procrastinate_jobs WHERE (args->>'n')::int <= 5",
    )
    assert sorted(left) == sorted([f"todo:{n}" for n in range(1, 6)] + ["failed:1"])
    # The recent jobs (n > 5) are all still there.
    assert (
        scalar(db_url, "SELECT count(*) FROM procrastinate_jobs WHERE (args->>'n')::int > 5") == 10
    )
    assert (
        scalar(
            db_url,
            "SELECT count(*) FROM procrastinate_events e LEFT JOIN"
            " procrastinate_jobs j ON j.id = e.job_id WHERE j.id IS NULL",
        )
        == 0
    )


async def test_retention_deletes_old_failures_but_not_pending_or_live_ones(
    db_url: str, caplog: Any
) -> None:
    """jobsys_failures grew forever: retention deleted jobs, never a failure row."""
    with psycopg.connect(db_url, autocommit=True) as c:
        statuses = ["failed", "failed", "failed", "todo", "doing", "failed"]
        for n, status in enumerate(statuses, start=1):
            c.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, status, args) VALUES"
                " ('sync', 't', %s, %s)",
                (status, json.dumps({"n": n})),
            )
        c.execute(
            "INSERT INTO procrastinate_events (job_id, type, at)"
            " SELECT id, 'deferred', now() - interval '100 days' FROM procrastinate_jobs"
        )
        # n: 1 old, 2 recent, 3 old with a pending retry, 4 old of a waiting job,
        # 5 old of a running job, 6 old with a retry audit row.
        c.execute(
            "INSERT INTO jobsys_failures (job_id, task, queue, attempt, error_class, kind,"
            " retryable, occurred_at, retry_state)"
            " SELECT id, 't', 'sync', 1, 'E', 'runtime', true,"
            " now() - CASE WHEN args->>'n' = '2' THEN interval '1 day'"
            " ELSE interval '100 days' END,"
            " CASE WHEN args->>'n' = '3' THEN '{\"outcome\": \"pending\"}'::jsonb"
            " ELSE '{}'::jsonb END FROM procrastinate_jobs"
        )
        c.execute(
            "INSERT INTO jobsys_retry_events (failure_id, job_id, decision, actor)"
            " SELECT f.id, f.job_id, 'retried', 'alice' FROM jobsys_failures f"
            " JOIN procrastinate_jobs j ON j.id = f.job_id WHERE j.args->>'n' = '6'"
        )
        n_of = dict(c.execute("SELECT id, (args->>'n')::int FROM procrastinate_jobs").fetchall())
    async with connect(db_url) as conn:
        with caplog.at_level("INFO", logger="jobsys.schedule.retention"):
            first = await purge(conn, Retention(batch_size=1))
            second = await purge(conn, Retention(batch_size=1))
    # The first run keeps every failure whose job is still in the table and deletes the
    # old failed jobs (1, 3, 6; 3's pending retry is another job); the second deletes
    # the failures of the jobs now gone, except 3's, whose retry is pending.
    assert (first.deleted["failures"], first.deleted["failed_jobs"]) == (0, 3)
    assert (second.deleted["failures"], second.deleted["failed_jobs"]) == (2, 0)
    assert caplog.messages[-1] == "retention deleted 2 rows (failures 2)", caplog.messages
    kept = scalar(db_url, "SELECT array_agg(job_id) FROM jobsys_failures")
    assert sorted(n_of[job] for job in kept) == [2, 3, 4, 5]
    assert scalar(db_url, "SELECT count(*) FROM jobsys_retry_events") == 0
    left = "SELECT array_agg((args->>'n')::int ORDER BY (args->>'n')::int) FROM procrastinate_jobs"
    assert scalar(db_url, left) == [2, 4, 5]


async def test_retention_keeps_the_failures_of_a_job_still_failed(db_url: str) -> None:
    """With failures_after_hours below failed_after_hours, a failed job still in the
    table kept no failure row: `jobs show` lost its traceback, `jobsys retry` (which takes
    failure ids) could no longer reach it, and the automatic-retry cap, which counts
    its failure rows, started again."""
    with psycopg.connect(db_url, autocommit=True) as c:
        job = c.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status)"
            " VALUES ('sync', 't', 'failed') RETURNING id"
        ).fetchone()[0]
        c.execute(
            "INSERT INTO procrastinate_events (job_id, type, at)"
            " VALUES (%s, 'failed', now() - interval '2 days')",
            (job,),
        )
        c.execute(
            "INSERT INTO jobsys_failures (job_id, task, queue, attempt, error_class, kind,"
            " retryable, occurred_at) VALUES (%s, 't', 'sync', 1, 'E', 'runtime', true,"
            " now() - interval '2 days')",
            (job,),
        )
    async with connect(db_url) as conn:
        result = await purge(conn, Retention(failures_after_hours=24))
    assert result.deleted.get("failures", 0) == 0
    assert scalar(db_url, "SELECT count(*) FROM jobsys_failures") == 1
    assert scalar(db_url, "SELECT status FROM procrastinate_jobs") == "failed"


def test_retention_probes_each_jobs_events_whatever_the_statistics(db_url: str) -> None:
    """A job's events are read job by job on the job_id index, never as an anti-join
    over every recent event: with the events' statistics behind (one old timestamp
    analysed, the recent events not yet), that anti-join held the recent events and
    compared each job with all of them, and a batch ran for minutes at 1,000,000 jobs."""
    from jobsys.engine.queries import DELETE_FINISHED_JOBS

    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status)"
            " SELECT 'sync', 't', 'succeeded' FROM generate_series(1, 20000)"
        )
        c.execute(
            "INSERT INTO procrastinate_events (job_id, type, at)"
            " SELECT id, 'succeeded', timestamptz '2026-01-01' FROM procrastinate_jobs"
        )
        c.execute("ANALYZE procrastinate_jobs")
        c.execute("ANALYZE procrastinate_events")
        c.execute(
            "INSERT INTO procrastinate_events (job_id, type, at)"
            " SELECT id, 'retried', now() FROM procrastinate_jobs WHERE id % 10 = 0"
        )
        plan = "\n".join(
            row[0]
            for row in c.execute(
                "EXPLAIN " + DELETE_FINISHED_JOBS,
                {"statuses": ["succeeded"], "before": datetime.now(UTC), "limit": 5000},
            )
        )
    assert "Anti Join" not in plan, plan
    assert "procrastinate_events_job_id_fkey_v1" in plan, plan


async def test_retention_task_runs_in_a_real_worker(
    db_url: str, tmp_path: Path, monkeypatch: Any
) -> None:
    from jobsys.config.application import load_config
    from jobsys.lanes.execution import build_engine_app
    from jobsys.settings import Settings

    folder = config_dir(
        tmp_path,
        FANOUT_YAML.replace("purge:", "retention:").replace(
            "demo.purge_expired_post_media", "jobsys.purge_retention"
        ),
    )
    monkeypatch.setenv("JOBSYS_CONFIG_DIR", str(folder))
    load_config(Settings(database_url=db_url, config_dir=folder))
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO jobsys_schedule_ticks (name, tick_at, status) VALUES"
            " ('a', now() - interval '100 days', 'enqueued'), ('a', now(), 'enqueued')"
        )
    app = build_engine_app(db_url, max_size=3)
    async with app.open_async():
        await app.configure_task("jobsys.purge_retention", queue="maintenance").defer_async()
        await app.run_worker_async(
            queues=["maintenance"], wait=False, install_signal_handlers=False
        )
    assert scalar(db_url, "SELECT status::text FROM procrastinate_jobs") == "succeeded"
    assert scalar(db_url, "SELECT count(*) FROM jobsys_schedule_ticks") == 1


OVERLAP_YAML = """
entries:
  one_batch:
    cron: "0 * * * *"
    fanout:
      table: accounts
      batch_size: 500
      task: demo.process_account
  one_batch_queued:
    cron: "0 * * * *"
    fanout:
      table: accounts
      batch_size: 500
      task: demo.process_account
      overlap: queue
maintenance: optional  # a test schedule: no maintenance entries
"""


def test_manual_run_is_skipped_while_the_previous_runs_items_are_pending(
    db_url: str, tmp_path: Path, cli: Any
) -> None:
    # The walkthrough: a run of one batch is "finished" as soon as a worker ran that
    # batch, a second later; a second `schedule run` then enqueued every item again.
    make_accounts(db_url, 5)
    base = ("--database-url", db_url, "--config-dir", str(config_dir(tmp_path, OVERLAP_YAML)))
    first = cli(*base, "schedule", "run", "one_batch", "--json")
    assert first.exit_code == 0, first.stderr
    assert first.json()["status"] == "started"
    run_id = first.json()["run_id"]

    async def batch() -> None:
        async with connect(db_url) as conn:
            assert await drain(conn, run_id) == 1

    asyncio.run(batch())
    assert scalar(db_url, "SELECT status FROM jobsys_fanout_runs WHERE id = %s", run_id) == (
        "finished"
    )

    refused = cli(*base, "schedule", "run", "one_batch")
    assert refused.exit_code == 2, refused.stderr
    assert refused.stdout == ""
    assert f"fan-out run {run_id} has enqueued its items but some are still waiting" in (
        refused.stderr
    )
    assert f"`jobsys fanout show {run_id}`" in refused.stderr
    shown = cli(*base, "fanout", "show", str(run_id), "--json").json()
    assert (shown["status"], shown["items_pending"]) == ("finished", 5)  # what holds it
    as_json = cli(*base, "schedule", "run", "one_batch", "--json")
    assert as_json.exit_code == 2
    data = as_json.json()
    assert (data["status"], data["blocked_by"], data["run_id"], data["overlap"]) == (
        "skipped",
        run_id,
        None,
        "skip",
    )
    # A refused manual run leaves nothing behind: one run, 5 items, one manual tick.
    assert scalar(db_url, "SELECT count(*) FROM jobsys_fanout_runs") == 1
    assert scalar(db_url, "SELECT count(*) FROM jobsys_schedule_ticks") == 1
    items = "SELECT count(*) FROM procrastinate_jobs WHERE task_name = 'demo.process_account'"
    assert scalar(db_url, items) == 5

    # A scheduled tick meets the same policy.
    async def tick() -> Any:
        from jobsys.config.application import load_config
        from jobsys.schedule.plan import build
        from jobsys.schedule.scheduler import fire
        from jobsys.settings import Settings

        plan = build(load_config(Settings(config_dir=tmp_path / "config")))
        async with connect(db_url) as conn, conn.transaction():
            return await fire(conn, plan.entries["one_batch"], datetime.now(UTC), status="enqueued")

    fired = asyncio.run(tick())
    assert (fired.status, fired.blocked_by, fired.items_pending) == ("skipped", run_id, True)

    # Once every item is done, the next manual run starts.
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(
            "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status IN ('todo', 'doing')"
        )
    assert cli(*base, "fanout", "show", str(run_id), "--json").json()["items_pending"] == 0
    again = cli(*base, "schedule", "run", "one_batch", "--json")
    assert again.exit_code == 0, again.stderr
    assert again.json()["status"] == "started" and again.json()["run_id"] != run_id

    # overlap: queue: a manual run behind a running one is queued, and says so.
    started = cli(*base, "schedule", "run", "one_batch_queued")
    assert started.exit_code == 0, started.stderr
    queued = cli(*base, "schedule", "run", "one_batch_queued", "--json")
    assert queued.exit_code == 0, queued.stderr
    assert (queued.json()["status"], queued.json()["blocked_by"]) == (
        "queued",
        int(started.stdout),
    )
    third = cli(*base, "schedule", "run", "one_batch_queued")
    assert third.exit_code == 2
    assert f"fan-out run {started.stdout.strip()} is still in progress" in third.stderr


@task(queue="sync", name="tests.fanout_unique_item", unique_for="1h", unique_keys=("account_id",))
def unique_item(account_id: int, mode: str = "") -> None:
    return None


def item_jobs(db_url: str, task_name: str) -> list[tuple[int, str]]:
    with psycopg.connect(db_url) as c:
        rows = c.execute(
            "SELECT (args->>'account_id')::int, status::text FROM procrastinate_jobs"
            " WHERE task_name = %s ORDER BY id",
            (task_name,),
        ).fetchall()
    return [(int(a), str(s)) for a, s in rows]


async def test_items_of_a_unique_task_are_enqueued_once_while_their_job_counts(
    db_url: str,
) -> None:
    """A per-item task registered with ``unique_for``: a run enqueues no item whose job
    still counts (one deferred by hand, or left by an earlier run), in every batch; an
    item whose job stopped counting (cancelled) is enqueued again."""
    from jobsys.jobs.defer import task_unique_key
    from jobsys.jobs.enqueue import NewJob, NewJobs, enqueue

    make_accounts(db_url, 30)
    name = "tests.fanout_unique_item"
    async with connect(db_url) as conn:
        by_hand = NewJob(
            name, "sync", {"account_id": 7, "mode": "manual"},
            unique=task_unique_key(name, {"account_id": 7}),
        )  # fmt: skip
        async with conn.transaction():
            [(hand_id, duplicate)] = (await enqueue(conn, NewJobs([by_hand]))).outcome
        assert not duplicate
        first = await start_fanout(
            conn, entry="a", source=SOURCE, task=name, queue="sync", batch_size=7,
            args={"mode": "fanout"},
        )  # fmt: skip
        assert first.run_id is not None
        assert await drain(conn, first.run_id) == 5  # 30 items in batches of 7
    jobs = item_jobs(db_url, name)
    assert sorted(a for a, _ in jobs) == list(range(1, 31))  # 7 once: the manual job
    assert len(jobs) == 30
    seven = "SELECT id FROM procrastinate_jobs WHERE args->>'account_id' = '7'"
    assert scalar(db_url, seven) == hand_id
    with psycopg.connect(db_url) as c:
        run = c.execute(
            "SELECT status, items_enqueued, cursor FROM jobsys_fanout_runs WHERE id = %s",
            (first.run_id,),
        ).fetchone()
    assert run == ("finished", 30, 30)  # the item left out still counts as done

    # Items 1-10 cancelled: they count no more; the rest are still waiting.
    query_ = "UPDATE procrastinate_jobs SET status = 'cancelled' WHERE task_name = %s"
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(query_ + " AND (args->>'account_id')::int <= 10", (name,))
    async with connect(db_url) as conn:
        second = await start_fanout(
            conn, entry="b", source=SOURCE, task=name, queue="sync", batch_size=7
        )
        assert second.run_id is not None
        await drain(conn, second.run_id)
    again = item_jobs(db_url, name)[30:]
    assert sorted(a for a, _ in again) == list(range(1, 11))
    assert {s for _, s in again} == {"todo"}


async def test_a_fanout_entry_can_make_its_items_unique(db_url: str) -> None:
    """``unique_for`` on the entry (schedule.yaml's fanout) for a task without it, with
    its keys: two runs over the same rows enqueue each item once."""
    from jobsys.jobs.unique import unique_spec

    make_accounts(db_url, 12)
    unique = unique_spec("1h", ["account_id"])
    async with connect(db_url) as conn:
        for entry in ("x", "y"):
            run = await start_fanout(
                conn, entry=entry, source=SOURCE, task=ITEM, queue="sync", batch_size=5,
                args={"entry": entry}, unique=unique,
            )  # fmt: skip
            assert run.run_id is not None
            await drain(conn, run.run_id)
        plain = await start_fanout(
            conn, entry="z", source=SOURCE, task=ITEM, queue="sync", batch_size=5
        )
        assert plain.run_id is not None
        await drain(conn, plain.run_id)
    jobs = item_jobs(db_url, ITEM)
    # x: 12 items; y: none (each still counts); z (not unique): 12 more.
    assert [a for a, _ in jobs] == list(range(1, 13)) * 2


async def test_retention_keeps_the_newest_failure_of_an_issue_not_resolved(db_url: str) -> None:
    """An open (or muted) issue keeps the failure that explains it, however old; a
    resolved issue's old failures all go, as do an open issue's older ones."""
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status)"
            " SELECT 'sync', 't', 'failed' FROM generate_series(1, 9)"
        )
        issues = {}
        for status in ("open", "muted", "resolved"):
            issues[status] = c.execute(
                "INSERT INTO jobsys_issues (fingerprint, kind, title, status, details)"
                " VALUES (%s, 'job_failure', %s, %s, '{}') RETURNING id",
                (f"fp-{status}", status, status),
            ).fetchone()[0]
        # Three old failures per issue, 100, 90 and 80 days old.
        c.execute(
            "INSERT INTO jobsys_failures (job_id, task, queue, attempt, error_class, kind,"
            " retryable, occurred_at, issue_id)"
            " SELECT j.id, 't', 'sync', 1, 'E', 'runtime', true,"
            " now() - (100 - 10 * ((j.n - 1) %% 3)) * interval '1 day',"
            " (%s::bigint[])[(j.n - 1) / 3 + 1]"
            " FROM (SELECT id, row_number() OVER (ORDER BY id) AS n"
            " FROM procrastinate_jobs) j",
            ([issues["open"], issues["muted"], issues["resolved"]],),
        )
        # Their jobs are gone (a job still in the table keeps all its failures).
        c.execute("DELETE FROM procrastinate_jobs")
    async with connect(db_url) as conn:
        result = await purge(conn, Retention(batch_size=2))
    assert result.deleted["failures"] == 7
    left = scalar(
        db_url,
        "SELECT array_agg(i.status || ':' || round(extract(epoch FROM now() - f.occurred_at)"
        " / 86400) ORDER BY i.status) FROM jobsys_failures f JOIN jobsys_issues i"
        " ON i.id = f.issue_id",
    )
    assert left == ["muted:80", "open:80"]
