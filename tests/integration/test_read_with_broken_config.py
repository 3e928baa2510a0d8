"""A read command that does not need the configuration runs on a broken one, but says
so once on stderr (newuser L14): stdout and the exit code are those of a good one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import CONFIG_DIR


@pytest.mark.parametrize(
    "args",
    [
        ["issues", "list"],
        ["issues", "list", "--json"],
        ["failures", "list"],
        ["failures", "list", "--json"],
        ["failures", "list", "--group-by", "kind", "--json"],
    ],
)
def test_one_warning_naming_the_line(  # type: ignore[no-untyped-def]
    cli, db_url: str, tmp_path: Path, args: list[str]
) -> None:
    broken = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, broken)
    queues = broken / "queues.yaml"
    queues.write_text(queues.read_text().replace("concurrency: 10", "concurrency: -1", 1))
    good = cli("--database-url", db_url, *args)
    result = cli("--database-url", db_url, "--config-dir", str(broken), *args)
    assert (result.exit_code, result.stdout) == (good.exit_code, good.stdout) == (0, good.stdout)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert (
        "queues.yaml:13: base.concurrency: input should be greater than or equal to 1"
        in (warnings[0])
    )
    assert "run `jobsys config check`" in warnings[0]
    assert "warning" not in good.stderr


@pytest.mark.parametrize("json", [False, True])
def test_failures_show_warns_once(cli, db_url: str, tmp_path: Path, json: bool) -> None:  # type: ignore[no-untyped-def]
    """`failures show` reads the database twice in words (the failure, then its job for
    the retry state now) through one configuration loader: one warning, not two."""
    from _retry_support import bulk_failed_jobs

    (failure,) = bulk_failed_jobs(db_url, 1)
    assert cli("--database-url", db_url, "retry", str(failure)).exit_code == 0
    broken = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, broken)
    queues = broken / "queues.yaml"
    queues.write_text(queues.read_text().replace("concurrency: 10", "concurrency: -1", 1))
    args = ["failures", "show", str(failure), *(["--json"] if json else [])]
    result = cli("--database-url", db_url, "--config-dir", str(broken), *args)
    assert result.exit_code == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    said = result.json()["retry_state"]["last_decision"] if json else result.stdout
    assert "retried" in said
    refused = cli("--config-dir", str(broken), *args)  # no database given: refused as before
    assert refused.exit_code == 2, refused.stdout


def test_dashboard_counts_the_problems_config_check_counts(  # type: ignore[no-untyped-def]
    cli, db_url: str, tmp_path: Path
) -> None:
    """A bad cron and a fan-out naming no task: `dashboard --once` refuses with the 2
    problems `config check` names (operator walk-through: it counted 1, having loaded the
    files without the tasks, while its hint sent the operator to `config check`)."""
    broken = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, broken)
    schedule = broken / "schedule.yaml"
    text = schedule.read_text().replace('cron: "*/5 * * * *"', 'cron: "*/5 * * *"', 1)
    schedule.write_text(text.replace("task: demo.send_story_auto_replies", "task: demo.nope", 1))
    base = ["--database-url", db_url, "--config-dir", str(broken)]
    check = cli(*base, "config", "check")
    dashboard = cli(*base, "dashboard", "--once")
    assert check.exit_code == dashboard.exit_code == 2, dashboard.stderr
    problems = [line for line in check.stdout.splitlines() if "schedule.yaml:" in line]
    assert len(problems) == 2, check.stdout
    said = " ".join(dashboard.stderr.split())  # folded at the terminal's width
    assert "error: 2 configuration problems:" in said
    for problem in problems:
        assert " ".join(problem.split()) in said


def test_dashboard_starts_when_the_application_does_not_import(  # type: ignore[no-untyped-def]
    cli, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The dashboard reads the database only: an application module that fails to import
    is said once on stderr (the problem `config check` names), and the snapshot shows."""
    (tmp_path / "walk2_broken_app.py").write_text("raise RuntimeError('boom at import')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    good = cli("--database-url", db_url, "dashboard", "--once", "--json")
    result = cli(
        "--database-url", db_url, "--app", "walk2_broken_app", "dashboard", "--once", "--json"
    )
    assert result.exit_code == 0, result.stderr
    assert set(result.json()) == set(good.json())
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert "app module 'walk2_broken_app' cannot be imported: RuntimeError" in warnings[0]
    assert "run `jobsys config check`" in warnings[0]
