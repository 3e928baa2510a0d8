"""The scheduler against a real Postgres, in-process: ticks claimed once under
concurrency, catch-up limit after a stale high-water mark, host clock ignored,
pause/resume, bad sources refused, and the `jobsys schedule` CLI contracts."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from schedule_support import config_dir

from jobsys.config import Config
from jobsys.config.application import load_config
from jobsys.db.connect import connect
from jobsys.errors import ConfigError
from jobsys.schedule.scheduler import Scheduler, tick_once
from jobsys.settings import Settings

EVERY_SECOND = """
defaults:
  catch_up: {catch_up}
entries:
  every_second:
    cron: "* * * * * *"
    task: demo.purge_expired_post_media
    args: {{reason: test}}
    priority: 3
maintenance: optional  # a test schedule: no maintenance entries
"""


def load(db_url: str, tmp_path: Path, yaml: str) -> Config:
    return load_config(Settings(database_url=db_url, config_dir=config_dir(tmp_path, yaml)))


def rows(db_url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url) as conn:
        return conn.execute(query, params).fetchall()


async def acli(cli: Any, *args: str) -> Any:
    """The in-process CLI from async code (it runs its own event loop)."""
    return await asyncio.to_thread(cli, *args)


def ticks(db_url: str, status: str | None = None) -> list[tuple[Any, ...]]:
    return rows(
        db_url,
        "SELECT tick_at, status, job_id FROM jobsys_schedule_ticks"
        " WHERE %s::text IS NULL OR status = %s ORDER BY tick_at",
        status,
        status,
    )


async def test_concurrent_ticks_enqueue_each_tick_once(db_url: str, tmp_path: Path) -> None:
    config = load(db_url, tmp_path, EVERY_SECOND.format(catch_up=1))
    async with connect(db_url) as a, connect(db_url) as b, connect(db_url) as c:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 3.5
        while loop.time() < deadline:
            results = await asyncio.gather(*(tick_once(conn, config) for conn in (a, b, c)))
            await asyncio.sleep(min(r.sleep_seconds for r in results))
    enqueued = ticks(db_url, "enqueued")
    assert len(enqueued) >= 3
    seconds = [t for t, _, _ in enqueued]
    assert seconds == [seconds[0] + timedelta(seconds=i) for i in range(len(seconds))]
    jobs = rows(
        db_url,
        "SELECT id, task_name, queue_name, priority, args FROM procrastinate_jobs ORDER BY id",
    )
    assert [j[0] for j in jobs] == sorted(job_id for _, _, job_id in enqueued)
    assert {(j[1], j[2], j[3]) for j in jobs} == {
        ("demo.purge_expired_post_media", "maintenance", 3)
    }
    assert all(j[4] == {"reason": "test"} for j in jobs)


async def test_stale_high_water_enqueues_catch_up_limit_and_records_missed(
    db_url: str, tmp_path: Path
) -> None:
    config = load(db_url, tmp_path, EVERY_SECOND.format(catch_up=2))
    async with connect(db_url) as conn:
        await tick_once(conn, config)  # registers the entry
        # As after an hour of downtime: the mark is an hour old.
        await conn.execute(
            "UPDATE jobsys_schedule_entries SET high_water = date_trunc('second', now())"
            " - interval '1 hour'"
        )
        result = await tick_once(conn, config)
    assert len(result.fired) == 2
    assert result.missed["every_second"] >= 3598
    enqueued = ticks(db_url, "enqueued")
    missed = ticks(db_url, "missed")
    assert [t for t, _, _ in enqueued][-2:] == [f.tick_at for f in result.fired]
    assert len(missed) == result.missed["every_second"]
    # Together they cover the hour once: each second exactly one row.
    covered = sorted(t for t, _, _ in [*missed, *enqueued[-2:]])
    assert covered == [covered[0] + timedelta(seconds=i) for i in range(len(covered))]
    assert rows(db_url, "SELECT count(*) FROM procrastinate_jobs")[0][0] == len(enqueued)


async def test_host_clock_jump_is_ignored(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = load(db_url, tmp_path, EVERY_SECOND.format(catch_up=1000))
    async with connect(db_url) as conn:
        await tick_once(conn, config)
        monkeypatch.setenv("JOBSYS_CLOCK_OFFSET_SECONDS", "3600")
        await asyncio.sleep(1.05)
        result = await tick_once(conn, config)
        db_now = result.db_now
    assert 3590 < result.host_skew_seconds < 3610
    # Only the tick(s) up to the database's now: nothing an hour ahead, no catch-up storm.
    assert 1 <= len(result.fired) <= 2
    assert all(f.tick_at <= db_now for f in result.fired)
    assert not ticks(db_url, "missed")


async def test_pause_stops_every_tick_and_resume_does_not_catch_up(
    db_url: str, tmp_path: Path, cli: Any
) -> None:
    config = load(db_url, tmp_path, EVERY_SECOND.format(catch_up=1000))
    folder = str(config.directory)
    async with connect(db_url) as conn:
        await tick_once(conn, config)
        paused = await acli(
            cli,
            "--database-url",
            db_url,
            "--config-dir",
            folder,
            "schedule",
            "pause",
            "every_second",
            "--json",
        )
        assert paused.exit_code == 0, paused.stderr
        assert paused.json()["paused"] is True
        assert paused.json()["paused_by"]
        before = len(ticks(db_url))
        for _ in range(3):
            await asyncio.sleep(0.5)
            result = await tick_once(conn, config)
            assert result.fired == []
        assert len(ticks(db_url)) == before
        listed = await acli(
            cli, "--database-url", db_url, "--config-dir", folder, "schedule", "list", "--json"
        )
        assert listed.json()["items"][0]["paused"] is True
        assert listed.json()["items"][0]["next_run_at"] is None
        resumed = await acli(
            cli,
            "--database-url",
            db_url,
            "--config-dir",
            folder,
            "schedule",
            "resume",
            "every_second",
        )
        assert resumed.exit_code == 0
        resumed_at = rows(db_url, "SELECT high_water FROM jobsys_schedule_entries")[0][0]
        await asyncio.sleep(1.05)
        result = await tick_once(conn, config)
    # Only ticks after resuming, not the paused ones (catch_up is 1000).
    assert result.fired
    assert all(f.tick_at > resumed_at for f in result.fired)
    assert len(ticks(db_url)) == before + len(result.fired)
    assert not ticks(db_url, "missed")


FANOUT_BAD = """
entries:
  no_table:
    cron: "0 * * * *"
    fanout:
      table: nowhere
      task: demo.process_account
  text_id:
    cron: "0 * * * *"
    fanout:
      table: named
      id_column: name
      task: demo.process_account
  bad_where:
    cron: "0 * * * *"
    fanout:
      table: named
      where: "no_such_column > 3"
      task: demo.process_account
maintenance: optional  # a test schedule: no maintenance entries
"""


async def test_bad_fanout_sources_refuse_to_start_with_located_errors(
    db_url: str, tmp_path: Path, cli: Any
) -> None:
    """A bad id column or filter is a configuration error; a table that does not exist
    (yet) is a warning: the scheduler sets that entry aside and runs the rest."""
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("CREATE TABLE named (id integer primary key, name text)")
    config = load(db_url, tmp_path, FANOUT_BAD)
    scheduler = Scheduler(config)
    async with connect(db_url) as conn:
        with pytest.raises(ConfigError) as exc:
            await scheduler.check(conn)
    problems = exc.value.problems
    assert len(problems) == 2
    assert "schedule.yaml:12: entries.text_id.fanout.id_column:" in problems[0]
    assert "must be an integer type" in problems[0]
    assert "schedule.yaml:18: entries.bad_where.fanout.where:" in problems[1]
    missing = "schedule.yaml:6: entries.no_table.fanout.table: table 'nowhere' does not exist"
    for command in (["schedule", "check"], ["config", "check"]):
        result = await acli(
            cli, "--database-url", db_url, "--config-dir", str(config.directory), *command, "--json"
        )
        assert result.exit_code == 2, (command, result.stderr)
        assert result.json()["problems"] == problems
    # Without a database, `config check` still validates the rest and says it skipped.
    result = await acli(cli, "--config-dir", str(config.directory), "config", "check", "--json")
    assert result.exit_code == 0
    assert result.json()["fanout_sources_checked"] is False
    for command in (["schedule", "check"], ["config", "check"]):
        human = await acli(cli, "--config-dir", str(config.directory), *command)
        assert human.exit_code == 0, (command, human.stderr)
        assert "(database unreachable: fan-out sources not checked)" in human.stderr, command
    # Only the missing table: a warning, exit 0, in every check and in `schedule list`.
    (tmp_path / "m").mkdir()
    only_missing = load(db_url, tmp_path / "m", FANOUT_BAD.split("  text_id:")[0] + MAINT)
    for command in (["schedule", "check"], ["config", "check"]):
        result = await acli(
            cli,
            "--database-url",
            db_url,
            "--config-dir",
            str(only_missing.directory),
            *command,
            "--json",
        )
        assert result.exit_code == 0, (command, result.stdout, result.stderr)
        (warning,) = result.json()["warnings"]
        assert missing in warning and "the scheduler skips it until it exists" in warning
    listed = await acli(
        cli,
        "--database-url",
        db_url,
        "--config-dir",
        str(only_missing.directory),
        "schedule",
        "list",
        "--json",
    )
    assert listed.exit_code == 0
    ((name, problem),) = [(r["name"], r["problem"]) for r in listed.json()["items"]]
    assert name == "no_table" and problem.endswith(
        f"{missing} (create it, or correct fanout.table)"
    )


MAINT = "maintenance: optional\n"


async def test_a_fanout_waiting_for_its_table_does_not_stop_the_rest(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler service runs the other entries and takes the fan-out up once its
    table exists (the shipped demo schedule on a fresh database)."""
    config = load(db_url, tmp_path, WAITING_FANOUT)
    scheduler = Scheduler(config)
    async with connect(db_url) as conn:
        await scheduler.check(conn)  # no ConfigError: the entry is set aside
        assert list(scheduler.waiting) == ["later"]
        assert list(scheduler.plan.entries) == ["every_second"]
        await tick_once(conn, scheduler.plan)  # registers the entries
        await asyncio.sleep(1.05)
        result = await tick_once(conn, scheduler.plan)
        assert {f.entry for f in result.fired} == {"every_second"}
    assert any(r.__dict__.get("action") == "fanout_source_missing" for r in caplog.records)
    issues = "SELECT kind, fingerprint, status FROM jobsys_issues ORDER BY id"
    assert rows(db_url, issues) == [("schedule_entry", "schedule_entry:later", "open")]
    with psycopg.connect(db_url, autocommit=True) as c:
        c.execute("CREATE TABLE later_rows (id integer primary key)")
    async with connect(db_url) as conn:
        await scheduler.check(conn)
    assert scheduler.waiting == {} and "later" in scheduler.plan.entries
    assert rows(db_url, issues) == [("schedule_entry", "schedule_entry:later", "resolved")]


async def test_a_pass_rechecks_entries_set_aside_by_the_injected_clock(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The scheduler's pass takes ``now``: an entry set aside is looked at again only
    once ``WAITING_RECHECK_SECONDS`` have passed on that clock, the next pass is due
    within that period, and a host clock far off the database's is warned about once."""
    from jobsys import clock
    from jobsys.schedule.scheduler import SKEW_WARNING_SECONDS, WAITING_RECHECK_SECONDS

    config = load(db_url, tmp_path, WAITING_FANOUT)
    scheduler = Scheduler(config)
    start = clock.now()
    async with connect(db_url) as conn:
        first = await scheduler.pass_on(conn, start)
        scheduler.last_result = first
        assert list(scheduler.waiting) == ["later"] and scheduler.checked_at == start
        assert scheduler.interval_seconds() <= WAITING_RECHECK_SECONDS
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute("CREATE TABLE later_rows (id integer primary key)")
        early = start + timedelta(seconds=WAITING_RECHECK_SECONDS - 1)
        await scheduler.pass_on(conn, early)
        assert list(scheduler.waiting) == ["later"]  # not rechecked yet
        skewed = start + timedelta(seconds=WAITING_RECHECK_SECONDS + 5 * SKEW_WARNING_SECONDS)
        result = await scheduler.pass_on(conn, skewed)
    assert scheduler.waiting == {} and scheduler.checked_at == skewed
    assert result.host_skew_seconds >= SKEW_WARNING_SECONDS
    skew = [r for r in caplog.records if r.__dict__.get("action") == "schedule_clock_skew"]
    assert len(skew) == 1


WAITING_FANOUT = """
entries:
  every_second:
    cron: "* * * * * *"
    task: demo.process_account
    args: {account_id: 1}
  later:
    cron: "0 * * * *"
    fanout:
      table: later_rows
      task: demo.process_account
maintenance: optional
"""


async def test_reload_keeps_the_running_schedule_when_the_new_one_is_bad(
    db_url: str, tmp_path: Path
) -> None:
    good = load(db_url, tmp_path, EVERY_SECOND.format(catch_up=1))
    scheduler = Scheduler(good)

    def bad() -> Config:
        return load(db_url, tmp_path / "x", "entries:\n  a:\n    cron: '61 * * * *'\n    task: t\n")

    (tmp_path / "x").mkdir()
    async with connect(db_url) as conn:
        assert await scheduler.reload(conn, bad) is False
        assert list(scheduler.schedule.entries) == ["every_second"]
        with psycopg.connect(db_url, autocommit=True) as c:
            c.execute("CREATE TABLE named (id integer primary key, name text)")
        bad_source = load(db_url, tmp_path / "x", FANOUT_BAD)
        assert await scheduler.reload(conn, lambda: bad_source) is False
        assert list(scheduler.schedule.entries) == ["every_second"]
        other = load(
            db_url,
            tmp_path / "x",
            EVERY_SECOND.replace("every_second", "renamed").format(catch_up=1),
        )
        assert await scheduler.reload(conn, lambda: other) is True
        assert list(scheduler.schedule.entries) == ["renamed"]


async def test_scheduled_jobs_are_announced_to_the_dashboard(db_url: str, tmp_path: Path) -> None:
    """A tick's job reaches ``jobs_changed`` like any deferral (on the tick's commit)."""
    config = load(db_url, tmp_path, EVERY_SECOND.format(catch_up=1))
    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN jobsys_events")
        async with connect(db_url) as conn:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 2.5
            while loop.time() < deadline:
                result = await tick_once(conn, config)
                await asyncio.sleep(result.sleep_seconds)
        enqueued = ticks(db_url, "enqueued")
        assert enqueued
        announced: list[int] = []
        async for note in listener.notifies(timeout=1.0):
            body = json.loads(note.payload)
            if body["topic"] == "jobs_changed":
                announced.extend(body["ids"])
    assert sorted(announced) == sorted(job_id for _, _, job_id in enqueued)


async def test_source_checks_use_the_configured_database_and_need_no_jobsys_schema(
    cli: Any, empty_db_url: str, tmp_path: Path
) -> None:
    """The fan-out sources are checked in the database every command uses, also when its
    URL is only `database.url` in queues.yaml, and before `db upgrade` (they are the
    application's tables). Both were reported as "database unreachable"."""
    with psycopg.connect(empty_db_url, autocommit=True) as c:
        c.execute("CREATE TABLE named (id integer primary key, name text)")
    directory = config_dir(tmp_path, FANOUT_BAD.split("  text_id:")[0] + MAINT)
    with (directory / "queues.yaml").open("a") as f:
        f.write(f"\ndatabase:\n  url: {empty_db_url}\n")
    for command in (["schedule", "check"], ["config", "check"]):
        result = await asyncio.to_thread(
            cli, "--config-dir", str(directory), *command, "--json", env={"JOBSYS_DATABASE_URL": ""}
        )
        assert result.exit_code == 0, (command, result.stdout, result.stderr)
        data = result.json()
        assert data["fanout_sources_checked"] is True, command
        (warning,) = data["warnings"]
        assert "table 'nowhere' does not exist" in warning, warning


def test_a_second_pause_or_a_resume_of_a_running_entry_writes_nothing(
    db_url: str, tmp_path: Path, cli: Any
) -> None:
    """`schedule pause` of a paused entry wrote the second operator's name and time over
    who paused it ('avatar_sync paused' again, paused_by bob); `schedule resume` of an
    entry not paused said 'resumed' and moved its high-water mark to now, past a tick
    not yet enqueued (operator walk-through). Both now write nothing and say so."""
    config = load(db_url, tmp_path, EVERY_SECOND.format(catch_up=1))
    base = ("--database-url", db_url, "--config-dir", str(config.directory), "schedule")

    def state() -> list[tuple[Any, ...]]:
        return rows(db_url, "SELECT paused, paused_at, paused_by, high_water, updated_at"
                            " FROM jobsys_schedule_entries")  # fmt: skip

    first = cli(*base, "pause", "every_second", "--json", env={"JOBSYS_OPERATOR": "alice"})
    assert (first.json()["paused_by"], first.json()["changed"]) == ("alice", True)
    before = state()
    again = cli(*base, "pause", "every_second", env={"JOBSYS_OPERATOR": "bob"})
    assert again.exit_code == 0
    assert "every_second is already paused (by alice at " in again.stderr, again.stderr
    assert "nothing was changed" in again.stderr
    as_json = cli(*base, "pause", "every_second", "--json", env={"JOBSYS_OPERATOR": "bob"})
    assert (as_json.json()["paused_by"], as_json.json()["changed"]) == ("alice", False)
    assert state() == before
    assert cli(*base, "resume", "every_second").stderr.strip() == "every_second resumed"
    before = state()
    idle = cli(*base, "resume", "every_second", "--json")
    assert (idle.exit_code, idle.json()["changed"]) == (0, False)
    text = cli(*base, "resume", "every_second")
    assert text.stderr.strip() == "every_second is not paused; nothing was changed"
    assert state() == before  # the high-water mark did not move
