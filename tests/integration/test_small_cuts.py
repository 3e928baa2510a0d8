"""The small cuts of issue #13, one test each."""

from __future__ import annotations

import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import pexpect
from _retry_support import bulk_failed_jobs, make_issue, sql
from live_support import jobsys_env

ANSI = re.compile(r"\x1b\[[0-9;?]*[a-zA-Z]")


def test_a_group_without_a_subcommand_shows_its_help(cli: Any) -> None:
    result = cli("failures")
    text = result.stdout + result.stderr
    assert "Missing command" not in text
    assert "Commands" in text and "list" in text and "show" in text


def test_a_kind_typo_gets_a_did_you_mean(cli: Any) -> None:
    result = cli("failures", "list", "--kind", "transiant")
    assert result.exit_code == 2
    assert "(did you mean 'transient'?)" in result.stderr


def test_a_second_upgrade_says_already_up_to_date(cli: Any, db_url: str) -> None:
    result = cli("--database-url", db_url, "db", "upgrade")
    assert result.exit_code == 0, result.stderr
    assert "schema already up to date at " in result.stderr
    assert " -> " not in result.stderr


def _pty(env: dict[str, str], *args: str) -> str:
    env = {**env, "TERM": "xterm-256color"}
    child = pexpect.spawn(sys.executable, ["-m", "jobsys", *args], env=env,
                          dimensions=(24, 100), encoding="utf-8", timeout=60)  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    return ANSI.sub("", child.before or "")


def test_no_empty_progress_bar_for_one_id_or_before_a_refusal(db_url: str, tmp_path: Path) -> None:
    [failure] = bulk_failed_jobs(db_url, 1)
    env = jobsys_env(db_url, tmp_path / "home")
    env.update(JOBSYS_APP="jobsys.demo.tasks,_retry_support",
               PYTHONPATH=str(Path(__file__).resolve().parent))  # fmt: skip
    one = _pty(env, "retry", str(failure))
    assert f"failure {failure} (job" in one and "retrying" not in one and "0/?" not in one
    refused = _pty(env, "retry", "1", "2", "3", "--all")
    assert "error:" in refused and "retrying" not in refused


def test_show_commands_print_words_not_json(cli: Any, db_url: str) -> None:
    [failure] = bulk_failed_jobs(db_url, 1, kind="authentication")
    url = ("--database-url", db_url)
    assert cli(*url, "retry", str(failure)).exit_code == 3  # refused: recorded in its state
    job = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (failure,))[0]["job_id"]
    shown = cli(*url, "jobs", "show", str(job))
    assert shown.exit_code == 0, shown.stderr
    retry_line = next(line for line in shown.stdout.splitlines() if line.startswith("retry "))
    assert "skipped_authentication" in retry_line and "{" not in retry_line
    outage = make_issue(db_url, kind="service_outage")
    sql(db_url, """UPDATE jobsys_issues SET details = '{"value": 0, "signal": "down",
                "threshold": 0}' WHERE id = %s""", (outage,))  # fmt: skip
    issue = cli(*url, "issues", "show", str(outage))
    details = next(line for line in issue.stdout.splitlines() if line.startswith("details"))
    assert "value: 0, signal: down, threshold: 0" in details and "{" not in details


def test_the_embedded_server_stays_stopped_after_db_stop(cli: Any) -> None:
    from jobsys.config.application import load_config
    from jobsys.db.service import embedded_left_running
    from jobsys.settings import Settings

    home = Path(tempfile.mkdtemp(prefix="jobsys-cut-"))  # short: the socket path has a limit
    env = {"JOBSYS_HOME": str(home)}
    try:
        assert cli("db", "start", env=env).exit_code == 0
        settings = Settings(database_url=None, home=home, config_dir=Path("/nonexistent"))
        loader = lambda: load_config(settings, with_tasks=False)  # noqa: E731
        assert embedded_left_running(settings, loader)  # what the demo's Ctrl-C note checks
        assert cli("db", "stop", env=env).exit_code == 0
        assert not embedded_left_running(settings, loader)
        refused = cli("queues", env=env)
        assert refused.exit_code == 69
        assert "was stopped with `jobsys db stop`" in refused.stderr
        assert "jobsys db start" in refused.stderr
        status = cli("db", "status", env=env)
        assert status.exit_code == 1
        assert "the embedded server is stopped: start it with `jobsys db start`" in status.stderr
        assert cli("db", "start", env=env).exit_code == 0  # an explicit start clears it
        assert cli("db", "status", env=env).exit_code == 0
        assert cli("db", "stop", env=env).exit_code == 0
        # `make run` starts with `db upgrade`: an explicit start too
        assert cli("db", "upgrade", env=env).exit_code == 0
        again = cli("queues", "--json", env=env)
        assert again.exit_code == 0, again.stderr
    finally:
        cli("db", "stop", env=env)
        shutil.rmtree(home, ignore_errors=True)


def test_ctrl_c_in_the_demo_says_the_embedded_postgres_still_runs(
    throwaway_server: tuple[Path, str], tmp_path: Path
) -> None:
    """`make run`, then Ctrl-C: the workers stop, the embedded server does not, and the
    terminal says so (with the command that stops it)."""
    import os
    import socket

    from jobsys.db import embedded

    home, _url = throwaway_server
    config = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", config)
    with socket.socket() as probe:  # the simulated AI service on a free port, not 8765
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    queues = config / "queues.yaml"
    queues.write_text(queues.read_text().replace("127.0.0.1:8765", f"127.0.0.1:{port}"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(JOBSYS_HOME=str(home), JOBSYS_CONFIG_DIR=str(config), TERM="dumb")
    import subprocess

    jobsys = [sys.executable, "-m", "jobsys"]
    subprocess.run([*jobsys, "db", "upgrade"], env=env, check=True, capture_output=True)
    child = pexpect.spawn(jobsys[0], [*jobsys[1:], "demo", "run", "--accounts", "20"], env=env,
                          timeout=90)  # fmt: skip
    try:
        child.expect(r"Ctrl-C\s+to\s+stop")  # the banner is folded at the pty's 80 columns
        child.expect(r"\[worker_ready\]")  # the lanes run: Ctrl-C stops them cleanly
        child.sendintr()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    said = " ".join(ANSI.sub("", child.before.decode()).split())
    note = re.compile(
        r"note: the embedded PostgreSQL server is still running \(the data stays\); "
        r"`\S*jobsys db stop` stops it"  # the command as this shell reaches it
    )
    assert note.search(said), said
    assert child.exitstatus == 0, said
    assert embedded.status(home).running
