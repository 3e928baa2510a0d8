"""Unique jobs: enforced by the database across processes (an advisory lock per key
held by the inserting transaction), duplicates answered with the existing job."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from jobsys import task

HERE = Path(__file__).resolve().parent
CONFIG_DIR = HERE.parents[1] / "config"


def sql(db_url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(query, params)
        return cur.fetchall() if cur.description else []


@pytest.mark.slow
def test_100_concurrent_defers_from_4_processes_make_one_job(db_url: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]),
        "UNIQUE_DB": db_url,
        "UNIQUE_CONFIG": str(CONFIG_DIR),
        "UNIQUE_DEFERS": "25",
        "UNIQUE_CONNECTIONS": "5",  # 20 sessions race at once
        "UNIQUE_START": str(time.time() + 8),  # all four up and connected by then
    }
    procs = [
        subprocess.Popen(
            [sys.executable, str(HERE / "unique_proc.py")],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        outcomes += json.loads(out)
    assert len(outcomes) == 100
    [(job_id,)] = sql(db_url, "SELECT id FROM procrastinate_jobs")
    assert sorted(outcomes, key=lambda o: o[1]) == [[job_id, False]] + [[job_id, True]] * 99
    assert sql(db_url, "SELECT job_id FROM jobsys_unique_jobs") == [(job_id,)]


def test_defer_unique_for_answers_with_the_existing_job(cli: Any, db_url: str) -> None:
    task = "demo.ai_face_match"

    def go(args: dict[str, Any], *more: str) -> Any:
        result = cli(
            "--database-url", db_url, "defer", task, "--args", json.dumps(args),
            "--unique-for", "1h", "--unique-key", "account_id", "--json", *more,
        )  # fmt: skip
        assert result.exit_code == 0, result.stderr
        return result.json()

    first = go({"account_id": 1, "media_id": 1})
    assert first["duplicate"] is False
    again = go({"account_id": 1, "media_id": 2})  # same key arg, other args differ
    assert (again["job_id"], again["duplicate"]) == (first["job_id"], True)
    other = go({"account_id": 2, "media_id": 1})
    assert other["duplicate"] is False and other["job_id"] != first["job_id"]
    # the human form says so, exit 0
    text = cli(
        "--database-url", db_url, "defer", task, "--args", '{"account_id": 1, "media_id": 3}',
        "--unique-for", "1h", "--unique-key", "account_id",
    )  # fmt: skip
    assert text.exit_code == 0
    assert text.stdout.strip() == str(first["job_id"])
    assert f"already queued as job {first['job_id']}" in text.stderr
    # running and succeeded (within the period) still count
    set_status = "UPDATE procrastinate_jobs SET status = %s WHERE id = %s"
    sql(db_url, set_status, ("doing", first["job_id"]))
    assert go({"account_id": 1, "media_id": 4})["job_id"] == first["job_id"]
    sql(db_url, set_status, ("succeeded", first["job_id"]))
    assert go({"account_id": 1, "media_id": 4})["job_id"] == first["job_id"]
    # ...but not once the period is over
    sql(db_url, "UPDATE jobsys_unique_jobs SET created_at = now() - interval '2 hours'")
    fresh = go({"account_id": 1, "media_id": 5})
    assert fresh["duplicate"] is False and fresh["job_id"] != first["job_id"]
    # a cancelled job does not count
    sql(db_url, set_status, ("cancelled", fresh["job_id"]))
    assert go({"account_id": 1, "media_id": 6})["duplicate"] is False
    count = sql(db_url, "SELECT count(*) FROM procrastinate_jobs WHERE task_name = %s", (task,))
    assert count == [(4,)]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("--unique-for", "soon"), "is not a duration"),
        (("--unique-for", "0s"), "out of range"),
        (("--unique-key", "account_id"), "need a period"),
        # A key the job is not deferred with would be null in every job's key: each
        # other account's job would be answered with the first one.
        (
            ("--unique-for", "1h", "--unique-key", "nokey"),
            "args: unique key 'nokey' is not one of the job's arguments or the task's "
            "parameters with a default (account_id, media_id)",
        ),
        (("--unique-for", "1h", "--unique-key", "acount_id"), "(did you mean 'account_id'?)"),
    ],
)
def test_bad_unique_options_exit_2(cli: Any, db_url: str, args: tuple[str, ...], says: str) -> None:
    result = cli(
        "--database-url", db_url, "defer", "demo.ai_face_match", "--args",
        '{"account_id": 1, "media_id": 1}', *args,
    )  # fmt: skip
    assert result.exit_code == 2 and says in result.stderr
    assert sql(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]


def test_a_declared_unique_key_that_is_not_a_parameter_is_refused_at_import() -> None:
    # It would be null in every job's key, on every path (defer, schedule ticks,
    # fan-outs): the jobs of accounts 2, 3... answered with account 1's, silently.
    from jobsys import tasks
    from jobsys.errors import UsageError

    with pytest.raises(UsageError) as info:

        @task(queue="default", name="uq.typo", unique_for="1h", unique_keys=("acount_id",))
        def typo(account_id: int, force: bool = False) -> None: ...

    assert str(info.value).startswith(
        "task 'uq.typo': unique_keys: 'acount_id' is not a parameter of "
        "test_a_declared_unique_key_that_is_not_a_parameter_is_refused_at_import.<locals>."
        "typo(account_id, force) (did you mean 'account_id'?)"
    ), info.value
    assert tasks.get("uq.typo") is None
    # the job context is not an argument of the jobs
    with pytest.raises(UsageError, match=r"'context' is not a parameter of .*ctx\(account_id\)"):

        @task(name="uq.ctx", pass_context=True, unique_for="1h", unique_keys=("context",))
        def ctx(context: Any, account_id: int) -> None: ...

    # a function taking **kwargs takes any name
    @task(queue="default", name="uq.kwargs", unique_for="1h", unique_keys=("acount_id",))
    def anything(**args: Any) -> None: ...

    assert tasks.get("uq.kwargs") is not None
    tasks.unregister("uq.kwargs")


@task(queue="default", name="uq.any", unique_for="1h", unique_keys=("account_id",))
def unique_any(**args: Any) -> None:
    return None


async def test_the_api_refuses_a_declared_unique_key_the_job_is_not_deferred_with(
    db_url: str,
) -> None:
    import jobsys
    from jobsys.config import load
    from jobsys.errors import UsageError
    from jobsys.jobs import defer

    defer.configure(load(CONFIG_DIR), url=db_url)
    try:
        with pytest.raises(UsageError, match=r"^args: unique key 'account_id' is not one of the "
                           r"job's arguments \(acount_id\) \(did you mean 'acount_id'\?\)"
                           r" Task uq.any declares unique_keys"):  # fmt: skip
            await jobsys.defer("uq.any", {"acount_id": 1})
        with pytest.raises(UsageError, match=r"^args\[1\]: unique key 'account_id'"):
            await jobsys.defer_many("uq.any", [{"account_id": 1}, {"acount_id": 2}])
    finally:
        defer.deactivate()
    assert sql(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(0,)]


@task(queue="maintenance", name="uq.opt", unique_for="1h", unique_keys=("account_id", "force"))
def unique_opt(account_id: int, force: bool = False) -> None:
    return None


async def test_a_unique_key_left_out_takes_the_parameters_default(db_url: str) -> None:
    # Callers omit force=False: that is the same job as passing it (it was refused,
    # and before that null, a key of its own), on the defer and the schedule paths.
    from datetime import UTC, datetime

    import jobsys
    from jobsys.config import load
    from jobsys.db.connect import connect
    from jobsys.jobs import defer
    from jobsys.schedule.plan import PlannedEntry
    from jobsys.schedule.scheduler import fire

    defer.configure(load(CONFIG_DIR), url=db_url)
    try:
        first = await jobsys.defer("uq.opt", {"account_id": 3})
        assert await jobsys.defer("uq.opt", {"account_id": 3, "force": False}) == first
        forced = await jobsys.defer("uq.opt", {"account_id": 3, "force": True})
        assert forced != first
        assert await jobsys.defer("uq.opt", {"account_id": 4}) not in (first, forced)
    finally:
        defer.deactivate()
    entries = [
        PlannedEntry(f"opt_{n}", "* * * * *", "UTC", "uq.opt", "maintenance", 0, {"account_id": n})
        for n in (3, 5)
    ]
    async with connect(db_url) as conn, conn.transaction():
        tick_at = datetime(2030, 1, 1, tzinfo=UTC)
        fired = [await fire(conn, entry, tick_at, status="enqueued") for entry in entries]
    assert fired[0].job_id == first
    assert fired[1].job_id not in (first, forced)
    assert sql(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(4,)]


@task(queue="maintenance", name="uq.tick", unique_for="1h")
def unique_tick() -> None:
    return None


async def test_a_schedule_tick_of_a_unique_task_links_the_job_that_counts(db_url: str) -> None:
    from datetime import UTC, datetime

    from jobsys.db.connect import connect
    from jobsys.schedule.plan import PlannedEntry
    from jobsys.schedule.scheduler import fire

    entry = PlannedEntry(
        name="tick", cron="* * * * *", timezone="UTC", task="uq.tick", queue="maintenance",
        priority=0,
    )  # fmt: skip
    async with connect(db_url) as conn:
        fired = []
        for minute in (1, 2):
            async with conn.transaction():
                tick_at = datetime(2030, 1, 1, 0, minute, tzinfo=UTC)
                fired.append(await fire(conn, entry, tick_at, status="enqueued"))
    assert fired[0].job_id == fired[1].job_id is not None
    # `schedule run` says "already queued as job N" for the second, not "enqueued"
    assert [f.already_queued for f in fired] == [False, True]
    assert sql(db_url, "SELECT count(*) FROM procrastinate_jobs") == [(1,)]
    # ... and the tick history says the second tick enqueued nothing (it said enqueued).
    assert [f.status for f in fired] == ["enqueued", "already_queued"]
    ticks = sql(db_url, "SELECT job_id, status FROM jobsys_schedule_ticks ORDER BY tick_at")
    assert ticks == [(fired[0].job_id, "enqueued"), (fired[0].job_id, "already_queued")]
