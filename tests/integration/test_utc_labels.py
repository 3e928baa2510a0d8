"""Times labelled UTC are in UTC whatever the session's TimeZone.

psycopg returns a ``timestamptz`` in the session's TimeZone: with a database (or a
server) whose default is not UTC, jobsys printed New York times labelled "UTC"
(review of 2026-12-06, finding 3). Each test runs on a database set to
America/New_York and reads the expected minute from the database, in UTC.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import failures_support as fx
import psycopg
import pytest
import web_support as ws
from failures_support import spool_home  # noqa: F401  (fixture)
from schedule_support import config_dir
from starlette.testclient import TestClient

from jobsys.db.connect import connect
from jobsys.failures.recorder import record_failure
from jobsys.failures.store import FailureRow
from jobsys.settings import Settings
from jobsys.web.app import create_app
from jobsys.web.auth import Credentials

SCHEDULE = """
entries:
  every_minute:
    cron: "* * * * *"
    task: demo.purge_expired_post_media
    args: {reason: test}
maintenance: optional  # a test schedule: no maintenance entries
"""


@pytest.fixture
def ny_db_url(db_url: str) -> str:
    """The test's database, its sessions' TimeZone America/New_York (5 h behind UTC in
    December, 4 h in summer: never UTC)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "ALTER DATABASE \"{}\" SET timezone = 'America/New_York'".format(
                conn.execute("SELECT current_database()").fetchone()[0]  # type: ignore[index]
            )
        )
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SHOW timezone").fetchone() == ("America/New_York",)
    return db_url


def utc_minute(db_url: str, query: str, *params: Any) -> str:
    """``2026-12-06 21:42 UTC``: the time ``query`` reads, written by the database in UTC,
    after a check that the session's local time differs from it."""
    sql = (
        "SELECT to_char(t AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI'), to_char(t, 'HH24:MI')"
        f" FROM ({query}) AS q(t)"
    )
    with psycopg.connect(db_url) as conn:
        row = conn.execute(sql, params).fetchone()
    assert row is not None
    assert row[0][-5:] != row[1]  # the session's local time is not UTC
    return f"{row[0]} UTC"


def one_issue(db_url: str) -> str:
    async def record() -> None:
        async with connect(db_url) as conn:
            row = FailureRow(
                job_id=1, task="t", queue="profiles", attempt=1, error_class="builtins.KeyError",
                message="'k'", kind="runtime", retryable=True,
            )  # fmt: skip
            await record_failure(conn, row, fx.repo_config())

    asyncio.run(record())
    (row,) = fx.rows(db_url, "SELECT id FROM jobsys_issues")
    return str(row["id"])


def test_a_second_schedule_pause_says_when_in_utc(cli: Any, ny_db_url: str, tmp_path: Path) -> None:
    base = ("--database-url", ny_db_url, "--config-dir", str(config_dir(tmp_path, SCHEDULE)))
    first = cli(*base, "schedule", "pause", "every_minute", env={"JOBSYS_OPERATOR": "alice"})
    assert first.exit_code == 0, first
    again = cli(*base, "schedule", "pause", "every_minute")
    at = utc_minute(ny_db_url, "SELECT paused_at FROM jobsys_schedule_entries")
    assert f"every_minute is already paused (by alice at {at}); nothing was changed" in (
        again.stderr
    ), (again.stderr, at)


def test_resolving_a_resolved_issue_and_a_mute_say_when_in_utc(cli: Any, ny_db_url: str) -> None:
    issue = one_issue(ny_db_url)
    url = ("--database-url", ny_db_url)
    assert cli(*url, "issues", "resolve", issue, env={"JOBSYS_OPERATOR": "alice"}).exit_code == 0
    again = cli(*url, "issues", "resolve", issue)
    at = utc_minute(ny_db_url, "SELECT resolved_at FROM jobsys_issues")
    assert f"issue {issue} is already resolved (by alice at {at}); nothing was changed" in (
        again.stderr
    ), (again.stderr, at)
    assert cli(*url, "issues", "reopen", issue).exit_code == 0
    muted = cli(*url, "issues", "mute", issue, "--for", "1h")
    until = utc_minute(ny_db_url, "SELECT muted_until FROM jobsys_issues")
    assert f"issue {issue} muted until {until}" in muted.stderr, (muted.stderr, until)
    # a show (and its --json) were already in UTC; they stay so
    shown = cli(*url, "issues", "show", issue, "--json").json()
    assert shown["muted_until"].startswith(until[:-4].replace(" ", "T"))  # type: ignore[index]


@pytest.fixture
def ny_client(settings: Settings, ny_db_url: str, spool_home: Any) -> Iterator[TestClient]:  # noqa: F811
    app = create_app(settings, Credentials(), database_url=ny_db_url, live=False)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def test_the_web_consoles_mute_and_queue_pause_say_until_in_utc(
    ny_client: TestClient, settings: Settings, ny_db_url: str
) -> None:
    issue = ws.seed(settings, ny_db_url).issues["runtime"]
    page = ny_client.get(f"/admin/issues/{issue}").text
    match = re.search(r'name="csrf-token" content="([^"]+)"', page)
    assert match
    token = match.group(1)
    muted = ny_client.post(f"/admin/issues/{issue}/mute", data={"csrf_token": token, "for": "2h"})
    until = utc_minute(ny_db_url, "SELECT muted_until FROM jobsys_issues WHERE id = %s", issue)
    assert f"muted until {until}" in muted.text, until
    paused = ny_client.post(
        "/admin/queues/story_downloads/pause", data={"csrf_token": token, "for": "30m"}
    )
    until = utc_minute(ny_db_url, "SELECT until FROM jobsys_queue_pauses")
    assert f"paused story_downloads until {until}" in paused.text, until
