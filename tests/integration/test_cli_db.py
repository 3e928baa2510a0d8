"""``jobsys db`` against a real server: JSON contracts, errors, masked passwords."""

from __future__ import annotations

from pathlib import Path

from conftest import CONFIG_DIR

from jobsys.db.schema import HEAD_REVISION


def test_upgrade_current_check_json(cli, empty_db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", empty_db_url, "db", "upgrade", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["to"] == [HEAD_REVISION]
    result = cli("--database-url", empty_db_url, "db", "current", "--json")
    assert result.exit_code == 0
    assert result.json()["revisions"] == [HEAD_REVISION]
    assert result.json()["up_to_date"] is True
    result = cli("--database-url", empty_db_url, "db", "check", "--json")
    assert result.exit_code == 0
    assert result.json() == {"url": result.json()["url"], "in_sync": True, "differences": []}


def test_refused_connection_exits_69_without_password(cli) -> None:  # type: ignore[no-untyped-def]
    url = "postgresql://alice:hunter2secret@127.0.0.1:1/nowhere"
    for command in (["db", "current"], ["db", "upgrade"], ["db", "check"], ["db", "url"]):
        result = cli("--database-url", url, *command)
        assert result.exit_code == (0 if command == ["db", "url"] else 69), (command, result)
        assert "hunter2secret" not in result.stdout + result.stderr
        assert "Traceback" not in result.stderr
    result = cli("--database-url", url, "db", "current")
    assert (
        "cannot connect to the database at postgresql://alice:***@127.0.0.1:1/nowhere"
        in result.stderr
    )


def test_status_reports_unreachable(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli(
        "--database-url", "postgresql://bob:pw123456@127.0.0.1:1/x", "db", "status", "--json"
    )
    assert result.exit_code == 1
    data = result.json()
    assert data["reachable"] is False
    assert "pw123456" not in result.stdout + result.stderr


def test_config_check_json(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("config", "check", "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["ok"] is True
    assert len(data["lanes"]) == 8


def test_config_check_broken_exits_2(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "queues.yaml").write_text("base:\n  concurrency: 0\n  queues: [a]\n")
    (tmp_path / "schedule.yaml").write_text("entries:\n  x:\n    cron: '* * *'\n    task: t\n")
    result = cli("--config-dir", str(tmp_path), "config", "check")
    assert result.exit_code == 2
    assert "queues.yaml:2: base.concurrency:" in result.stdout
    assert "schedule.yaml:3: entries.x.cron:" in result.stdout
    result = cli("--config-dir", str(tmp_path), "config", "check", "--json")
    assert result.exit_code == 2
    assert result.json()["ok"] is False


def test_config_check_refuses_an_empty_schedule_naming_the_file(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    shutil.copy(CONFIG_DIR / "queues.yaml", tmp_path / "queues.yaml")
    (tmp_path / "schedule.yaml").write_text("")
    result = cli("--config-dir", str(tmp_path), "config", "check")
    assert result.exit_code == 2, result.stdout
    assert "schedule.yaml:1: entries: the schedule has no entries" in result.stdout
    assert "0 schedule entries" not in result.stdout + result.stderr
    (tmp_path / "schedule.yaml").write_text("allow_empty: true\nentries: {}\n")
    result = cli("--config-dir", str(tmp_path), "config", "check")
    assert result.exit_code == 0, result.stdout + result.stderr


def test_a_worker_refuses_to_start_on_an_empty_schedule(tmp_path, db_url: str) -> None:  # type: ignore[no-untyped-def]
    import os
    import shutil
    import subprocess
    import sys

    shutil.copy(CONFIG_DIR / "queues.yaml", tmp_path / "queues.yaml")
    (tmp_path / "schedule.yaml").write_text("# truncated by a bad deploy\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    # As systemd starts it (INVOCATION_ID): the unit renders RestartPreventExitStatus=2,
    # so the message must say how to get the unit back.
    env.update(JOBSYS_DATABASE_URL=db_url, JOBSYS_CONFIG_DIR=str(tmp_path), INVOCATION_ID="x")
    proc = subprocess.run(
        [str(Path(sys.executable).with_name("jobsys")), "worker", "--lane", "base"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2, proc.stderr
    assert "schedule.yaml:1: entries: the schedule has no entries" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "systemctl reset-failed jobsys-worker@base && systemctl start" in proc.stderr


def test_status_follows_the_database_url_of_the_config(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import shutil

    from conftest import CONFIG_DIR

    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    with (config / "queues.yaml").open("a") as f:
        f.write("\ndatabase:\n  url: postgresql://carol:s3cretpw99@127.0.0.1:1/x\n")
    result = cli("--config-dir", str(config), "db", "status", "--json")
    assert result.exit_code == 1, result.stderr
    data = result.json()
    assert (data["source"], data["reachable"]) == ("config", False)
    assert data["url"] == "postgresql://carol:***@127.0.0.1:1/x"
    assert "s3cretpw99" not in result.stdout + result.stderr


def test_db_start_refuses_and_stop_notes_when_another_database_is_configured(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """They manage the embedded server only. Starting one nobody would use is refused;
    stopping always stops it (make clean deletes its directory next) and says the
    configured database was not touched."""
    url = "postgresql://dave:pw7777777@127.0.0.1:1/x"
    result = cli("--database-url", url, "db", "start")
    assert result.exit_code == 2, result.stderr
    assert "jobsys db start manages the embedded PostgreSQL server only" in result.stderr
    assert "postgresql://dave:***@127.0.0.1:1/x" in result.stderr
    result = cli("--database-url", url, "db", "stop", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["configured_database"] == "postgresql://dave:***@127.0.0.1:1/x"
    assert "that database was not touched" in result.stderr
    for out in (result.stdout, result.stderr):
        assert "pw7777777" not in out


def test_db_stop_works_with_a_broken_config(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "queues.yaml").write_text("bogus_key: 1\n")
    result = cli("--config-dir", str(tmp_path), "db", "stop")
    assert result.exit_code == 0, result.stderr
    assert "it was not running" in result.stderr


def test_config_check_reports_a_task_typo_beside_other_problems(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An entry invalid for one reason (a key typo) still has its task checked: every
    problem in one run, not one round of fixing per problem."""
    import shutil

    from conftest import CONFIG_DIR

    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    (config / "schedule.yaml").write_text(
        "entries:\n"
        "  purge:\n"
        "    cron: '0 3 * * *'\n"
        "    task: demo.purge_expird_post_media\n"
        "    queu: maintenance\n"
        "  bad_cron:\n"
        "    cron: '61 * * * *'\n"
        "    task: demo.purge_expired_post_media\n"
    )
    result = cli("--config-dir", str(config), "config", "check")
    assert result.exit_code == 2
    out = result.stdout
    assert "schedule.yaml:5: entries.purge.queu: unknown key" in out
    assert "schedule.yaml:7: entries.bad_cron.cron:" in out
    assert (
        "schedule.yaml:4: entries.purge.task: unknown task 'demo.purge_expird_post_media' "
        "(did you mean 'demo.purge_expired_post_media'?)" in out
    )


def test_an_unknown_revision_is_a_usage_error(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    for command in (["db", "upgrade", "nope"], ["db", "downgrade", "nope", "--yes"]):
        result = cli("--database-url", db_url, *command)
        assert result.exit_code == 2, (command, result.stderr)
        assert "unknown revision 'nope'" in result.stderr
        assert f"Known revisions: head, base, {HEAD_REVISION}" in result.stderr
        assert "internal error" not in result.stderr
    for command in (["db", "upgrade", "9999"], ["db", "downgrade", "--yes", "--", "-99"]):
        result = cli("--database-url", db_url, *command)
        assert result.exit_code == 2, (command, result.stderr)
        assert "Known revisions: head, base" in result.stderr
        assert "internal error" not in result.stderr
    result = cli("--database-url", db_url, "db", "current", "--json")
    assert result.json()["revisions"] == [HEAD_REVISION]  # nothing moved


def test_config_show_prints_the_effective_database_and_queues(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The walkthrough: `database: url: null` while JOBSYS_DATABASE_URL was set, and
    # capsule lanes with `queues: []`.
    secret = "postgresql://jobs:hunter2@db.example:5432/jobs"
    shown = cli("config", "show", "--json", env={"JOBSYS_DATABASE_URL": secret})
    assert shown.exit_code == 0, shown.stderr
    data = shown.json()  # one document
    assert data["queues"]["database"] == {
        "url": "postgresql://jobs:***@db.example:5432/jobs",
        "source": "env",
        "config_url": None,
    }
    assert data["queues"]["capsules"]["ai_face_queue"]["queues"] == ["ai_face_queue"]
    assert "sync" in data["queues"]["base"]["queues"]
    text = cli("config", "show")
    assert "hunter2" not in text.stdout
    assert "url: postgresql://jobs:***@db.example:5432/jobs\n    source: env" in text.stdout
    assert "- ai_face_queue" in text.stdout

    flag = cli("--database-url", secret, "config", "show", "--json")
    assert flag.json()["queues"]["database"]["source"] == "flag"
    # Nothing configured: the embedded server (not started by `config show`).
    monkey_env = cli("config", "show", "--json", env={"JOBSYS_DATABASE_URL": ""})
    database = monkey_env.json()["queues"]["database"]
    assert (database["source"], database["url"]) == ("embedded", None)
    assert not (tmp_path / "cli-home" / "pgdata").exists()


def test_db_status_names_the_same_source_as_config_show(cli) -> None:  # type: ignore[no-untyped-def]
    # Found by a new-operator test: `db status` said `setting` where `config show` said
    # `env` or `flag`, and the README lists only the latter.
    closed = "postgresql://dave:pw7731@127.0.0.1:1/x"
    by_env = cli("db", "status", "--json", env={"JOBSYS_DATABASE_URL": closed})
    by_flag = cli("--database-url", closed, "db", "status", "--json")
    assert (by_env.json()["source"], by_flag.json()["source"]) == ("env", "flag")
    shown = cli("--database-url", closed, "config", "show", "--json")
    assert shown.json()["queues"]["database"]["source"] == "flag"


def test_config_check_in_the_wrong_folder_says_what_to_do(cli, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Run from the wrong folder (a deploy pipeline's), config check said only
    "config: configuration directory not found"; other commands name the fix."""
    result = cli("--config-dir", str(tmp_path / "nowhere"), "config", "check")
    assert result.exit_code == 2
    assert "configuration directory not found" in result.stdout
    assert "Point --config-dir or JOBSYS_CONFIG_DIR at the folder holding queues.yaml." in (
        " ".join(result.stderr.split())
    )
    (tmp_path / "queues.yaml").write_text("base:\n  concurrency: 0\n  queues: [a]\n")
    (tmp_path / "schedule.yaml").write_text("entries: {}\nallow_empty: true\n")
    broken = cli("--config-dir", str(tmp_path), "config", "check")
    assert broken.exit_code == 2 and "base.concurrency" in broken.stdout
    assert "Fix the lines above" not in broken.stderr  # not "run config check" from itself
