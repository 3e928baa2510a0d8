"""``jobsys db`` against a real server: JSON contracts, errors, masked passwords."""

from __future__ import annotations

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
