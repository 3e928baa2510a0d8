"""``jobsys dashboard``: every panel from real rows, and the live view under a real pty."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pexpect
import psycopg
import pytest
from live_support import jobsys_env, run_worker_until_idle

from jobsys import task
from jobsys.config.application import load_config
from jobsys.lanes.execution import build_engine_app
from jobsys.live import coalesce
from jobsys.settings import Settings


@task(queue="profiles", name="tests.dash.ok")
def ok(account_id: int) -> None:
    return None


@pytest.fixture(autouse=True)
def _fresh_coalescer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coalesce, "_SHARED", None)


async def _defer(url: str, task_name: str, count: int, queue: str | None = None) -> list[int]:
    app = build_engine_app(url)
    async with app.open_async():
        deferrer = app.configure_task(task_name, queue=queue)
        return [await deferrer.defer_async(account_id=i) for i in range(count)]


def _populate(url: str, settings: Settings) -> None:
    asyncio.run(_defer(url, "tests.dash.ok", 5))
    asyncio.run(run_worker_until_idle(url, load_config(settings), ["profiles"]))
    waiting = asyncio.run(_defer(url, "tests.dash.ok", 3, queue="ai_face_queue"))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (waiting[0],))
        conn.execute(
            "INSERT INTO jobsys_failures (job_id, task, queue, attempt, error_class, message, "
            "kind, retryable, account_id) VALUES (%s, 'demo.refresh_profile', 'profiles', 1, "
            "'AuthenticationError', 'log in again', 'authentication', false, 'acct42')",
            (waiting[1],),
        )
        conn.execute(
            "INSERT INTO jobsys_issues (fingerprint, kind, title, occurrences, affected_accounts) "
            "VALUES ('f', 'job_failure', 'Instagram wants a login', 300, 40)"
        )
        conn.execute(
            "INSERT INTO jobsys_fanout_runs (entry, source, task, queue, batch_size, cursor, "
            "batches_done, items_enqueued) VALUES ('profile_refresh', 'schedule', "
            "'demo.refresh_profile', 'profiles', 500, 1500, 3, 1500)"
        )
        conn.execute(
            "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes) "
            "VALUES ('hostA:4242:1:ab', 'hostA', 4242, ARRAY['base', 'ai_face_queue'])"
        )


def test_once_renders_every_panel_with_data(cli, db_url: str, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    _populate(db_url, settings)
    result = cli("--database-url", db_url, "dashboard", "--once")
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "waiting 2  running 1" in out
    assert "ai_face_queue" in out and "1/2" in out  # busy / concurrency
    ok_row = next(line for line in out.splitlines() if line.strip().startswith("ok "))
    assert sum(int(n) for n in ok_row.split()[1:]) == 5
    assert "pickup latency p50" in out
    assert " auth " in out and "acct42" in out and "log in again" in out
    assert "OPEN ISSUES (1)" in out and "Instagram wants a login" in out and "300x" in out
    assert "fan-out profile_refresh (run" in out and "1500 items" in out
    assert "continuous_account_processing" in out
    assert "hostA:4242" in out

    result = cli("--database-url", db_url, "top", "--once", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert {
        "lanes",
        "throughput",
        "pickup_latency",
        "recent_failures",
        "open_issues",
        "schedule",
        "workers",
        "database_ms",
    } <= set(data)
    assert sum(m["succeeded"] for m in data["throughput"]) == 5
    # the header's rates: a full sliding minute, final failures apart from retried attempts
    assert data["last_minute"] == {"window_seconds": 60, "succeeded": 5, "failed": 0, "retried": 0}
    assert data["failures_last_hour"] == 1
    assert data["pickup_latency"]["samples"] == 6  # 5 run + the one set to doing


def test_once_unreachable_database_exits_69(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", "postgresql://x:pw9876543@127.0.0.1:1/x", "dashboard", "--once")
    assert result.exit_code == 69
    assert "pw9876543" not in result.stderr + result.stdout


def spawn_dashboard(
    env: dict[str, str], *, timeout: float, term: str = "xterm-256color"
) -> pexpect.spawn:
    """``jobsys dashboard --watch`` (the read-only live screen) in an 80x24 pty, sized
    by the pty (not COLUMNS/LINES), on the terminal type the test names (never the
    caller's)."""
    env = {k: v for k, v in env.items() if k not in ("COLUMNS", "LINES", "TERM")}
    if term:
        env["TERM"] = term
    return pexpect.spawn(
        sys.executable,
        ["-m", "jobsys", "dashboard", "--watch"],
        env=env,
        dimensions=(24, 80),
        encoding="utf-8",
        timeout=timeout,
    )


def test_live_dashboard_in_a_pty_updates_and_quits_on_q(db_url: str, tmp_path: Path) -> None:
    child = spawn_dashboard(jobsys_env(db_url, tmp_path / "home"), timeout=20)
    try:
        child.expect("LANES")
        child.expect("waiting 0  running 0")
        asyncio.run(_defer(db_url, "tests.dash.ok", 1))
        child.expect("waiting 1  running 0")  # redrawn on the deferral, not the slow timer
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert "\x1b[?1049l" in (child.before or "")  # left the alternate screen


@pytest.mark.parametrize("term", ["dumb", ""])
def test_a_terminal_it_cannot_drive_gets_a_plain_refreshing_view(
    db_url: str, tmp_path: Path, term: str
) -> None:
    child = spawn_dashboard(jobsys_env(db_url, tmp_path / "home"), timeout=20, term=term)
    try:
        child.expect(f"TERM={term or 'unset'}: this terminal cannot show the live screen")
        child.expect("LANES")
        child.expect("waiting 0  running 0")
        asyncio.run(_defer(db_url, "tests.dash.ok", 1))
        child.expect("waiting 1  running 0")  # printed again on the deferral
        child.send("q")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert "\x1b[?1049h" not in (child.before or "")  # never the alternate screen


def test_live_dashboard_small_terminal_and_ctrl_c(db_url: str, tmp_path: Path) -> None:
    env = jobsys_env(db_url, tmp_path / "home")
    env["TERM"] = "xterm-256color"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "jobsys", "top", "--watch"],
        env=env,
        dimensions=(10, 40),
        encoding="utf-8",
        timeout=20,
    )
    try:
        child.expect("enlarge the terminal")
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert "Traceback" not in (child.before or "")


def test_environment_is_clean() -> None:
    assert not any(k.startswith("JOBSYS_") for k in os.environ)


def test_live_dashboard_says_the_database_is_gone_and_reconnects(tmp_path: Path) -> None:
    """The server goes away under a running dashboard: the screen says so (no crash),
    and when the server is back the dashboard reconnects and quits cleanly on q."""
    import shutil
    import tempfile

    from jobsys.db import embedded, migrate

    home = Path(tempfile.mkdtemp(prefix="jobsys-dash-"))  # a throwaway server, short path
    try:
        url = embedded.start(home).url
        assert url is not None
        migrate.upgrade(url)
        child = spawn_dashboard(jobsys_env(url, tmp_path / "home"), timeout=30)
        try:
            child.expect("LANES")
            embedded.stop(home)
            child.expect("DATABASE UNREACHABLE")
            assert child.isalive()
            embedded.start(home)
            asyncio.run(_defer(url, "tests.dash.ok", 1))
            child.expect("waiting 1  running 0")  # reconnected and re-read
            child.send("q")
            child.expect(pexpect.EOF)
        finally:
            child.close(force=True)
        assert child.exitstatus == 0, child.before
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
