"""A fan-out set aside for a missing table says how to get it (newuser L11): the demo's
``demo_accounts`` by running the seed, any other by creating it; once per entry, not per
check."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from schedule_support import config_dir

from jobsys.config.application import load_config
from jobsys.db.connect import connect
from jobsys.schedule.scheduler import Scheduler
from jobsys.settings import Settings

TWO_MISSING = """
entries:
  accounts:
    cron: "0 * * * *"
    fanout:
      table: demo_accounts
      task: demo.process_account
  elsewhere:
    cron: "0 * * * *"
    fanout:
      table: nowhere
      task: demo.process_account
maintenance: optional
"""


async def test_a_missing_demo_table_says_run_the_seed(
    db_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = load_config(
        Settings(database_url=db_url, config_dir=config_dir(tmp_path, TWO_MISSING))
    )
    scheduler = Scheduler(config)
    async with connect(db_url) as conn:
        await scheduler.check(conn)
        await scheduler.check(conn)  # the periodic re-check: nothing logged again
    logged = [
        r.getMessage()
        for r in caplog.records
        if r.__dict__.get("action") == "fanout_source_missing"
    ]
    assert len(logged) == 2, logged
    accounts, elsewhere = sorted(logged)
    assert re.search(
        r"entries\.accounts\.fanout\.table: table 'demo_accounts' does not exist "
        r"\(the bundled demo creates it: run `jobsys demo seed`\)",
        accounts,
    ), accounts
    assert (
        "entries.elsewhere.fanout.table: table 'nowhere' does not exist "
        "(create it, or correct fanout.table)"
    ) in elsewhere


def test_the_demo_tables_named_are_the_ones_the_demo_creates() -> None:
    from jobsys.demo import store
    from jobsys.schedule.fanout import DEMO_SEEDED_TABLES

    created = set(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", store.CREATE_ACCOUNTS))
    assert created and {t.removeprefix("public.") for t in DEMO_SEEDED_TABLES} == created
