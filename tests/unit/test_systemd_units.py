"""``jobsys systemd render``: the units pass ``systemd-analyze verify`` with no warning
at all (it exits 0 on unknown keys, so its output is what counts), and carry the
settings operators rely on."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from conftest import CONFIG_DIR

from jobsys.config import load as load_config_files

LANES = list(load_config_files(CONFIG_DIR).lanes)


def systemd_analyze() -> str:
    found = shutil.which("systemd-analyze") or next(
        (p for p in ("/usr/bin/systemd-analyze", "/bin/systemd-analyze") if Path(p).exists()),
        None,
    )
    if found is None:
        pytest.skip(
            "systemd-analyze is not installed (Debian: apt-get install -y systemd; "
            ".ci/run installs it)"
        )
    return found


def verify(*paths: Path) -> str:
    """Everything ``systemd-analyze verify`` prints about ``paths`` (empty: clean)."""
    proc = subprocess.run(
        [systemd_analyze(), "verify", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return (proc.stdout + proc.stderr).strip() + ("" if proc.returncode == 0 else " [exit≠0]")


def test_template_units_verify_clean(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("systemd", "render", "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jobsys-worker@.service", "jobsys.target"]
    instances = [tmp_path / f"jobsys-worker@{lane}.service" for lane in LANES]
    assert verify(tmp_path / "jobsys-worker@.service", *instances, tmp_path / "jobsys.target") == ""
    assert "systemctl enable --now jobsys-worker@base.service" in result.stderr
    # The environment file comes first, private, and a re-deploy does not empty it.
    env_step = (
        "  sudo install -d /etc/jobsys && sudo touch /etc/jobsys/jobsys.env && "
        "sudo chmod 600 /etc/jobsys/jobsys.env   # then set JOBSYS_DATABASE_URL=postgresql://... "
        "in it\n"
    )
    assert "install:\n" + env_step + "  sudo cp " in result.stderr


def test_a_database_url_from_the_environment_is_not_written_and_is_named(
    cli, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    # The deploy walk: rendered with JOBSYS_DATABASE_URL exported, the units carried no
    # URL and nothing said so; the workers started an embedded server of their own.
    url = "postgresql://jobs:pw-s3cret@db.internal/jobs"
    result = cli("systemd", "render", "--out", str(tmp_path), env={"JOBSYS_DATABASE_URL": url})
    assert result.exit_code == 0, result.stderr
    stderr = " ".join(result.stderr.split())
    assert (
        "warning: the units do not carry the database URL given here (JOBSYS_DATABASE_URL)"
    ) in stderr
    assert "Set JOBSYS_DATABASE_URL in /etc/jobsys/jobsys.env (mode 600" in stderr
    unit = (tmp_path / "jobsys-worker@.service").read_text()
    assert "pw-s3cret" not in unit + result.stdout + result.stderr
    assert "EnvironmentFile=-/etc/jobsys/jobsys.env" in unit


def test_per_lane_units_verify_clean(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    result = cli("systemd", "render", "--per-lane", "--out", str(tmp_path))
    assert result.exit_code == 0, result.stderr
    units = sorted(tmp_path.glob("*.service"))
    assert [p.name for p in units] == sorted(f"jobsys-worker-{lane}.service" for lane in LANES)
    assert verify(*units, tmp_path / "jobsys.target") == ""
    base = (tmp_path / "jobsys-worker-base.service").read_text()
    assert " worker --lane base --log-format json\n" in base
    assert "SyslogIdentifier=jobsys-worker-base\n" in base


def test_the_verify_check_catches_a_typo(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    assert cli("systemd", "render", "--out", str(tmp_path)).exit_code == 0
    unit = tmp_path / "jobsys-worker@.service"
    unit.write_text(unit.read_text().replace("RestartSec=", "RestartSecs="))
    assert "Unknown key 'RestartSecs'" in verify(unit, tmp_path / "jobsys-worker@base.service")


def unit_settings(text: str) -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(key, []).append(value)
    return settings


def test_unit_settings_follow_the_worker_config(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    config = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, config)
    queues = config / "queues.yaml"
    queues.write_text(
        queues.read_text()
        .replace("shutdown_grace_seconds: 30", "shutdown_grace_seconds: 95")
        .replace("dead_after_seconds: 30", "dead_after_seconds: 60")
    )
    result = cli(
        "--config-dir", str(config), "systemd", "render", "--json",
        "--exec", "/opt/jobsys/bin/jobsys", "--working-directory", "/srv/jobsys",
        "--user", "jobsys",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert [u["name"] for u in data["units"]] == ["jobsys-worker@.service", "jobsys.target"]
    s = unit_settings(data["units"][0]["content"])
    assert s["Type"] == ["notify"]
    assert s["NotifyAccess"] == ["main"]
    assert s["ExecStart"] == ["/opt/jobsys/bin/jobsys worker --lane %i --log-format json"]
    assert s["Restart"] == ["always"]
    assert s["KillSignal"] == ["SIGTERM"]
    assert int(s["TimeoutStopSec"][0]) > 95
    assert int(s["WatchdogSec"][0]) < 60  # killed before other hosts take it for dead
    assert int(s["RestartSec"][0]) > 0
    # A configuration error (exit 2) is never restarted; any other crash loop stops
    # after the start limit, which a burst of RestartSec-spaced starts can reach.
    assert s["RestartPreventExitStatus"] == ["2"]
    burst, interval = int(s["StartLimitBurst"][0]), int(s["StartLimitIntervalSec"][0])
    assert burst > 1 and interval > 0
    assert burst * int(s["RestartSec"][0]) < interval
    assert "systemctl reset-failed" in data["units"][0]["content"]
    assert s["EnvironmentFile"] == ["-/etc/jobsys/jobsys.env"]
    assert s["WorkingDirectory"] == ["/srv/jobsys"]
    assert f"JOBSYS_CONFIG_DIR={config.resolve()}" in s["Environment"]
    assert s["User"] == ["jobsys"]
    assert s["StandardOutput"] == ["journal"]
    assert s["SyslogIdentifier"] == ["jobsys-worker-%i"]
    target = unit_settings(data["units"][1]["content"])
    assert target["Wants"] == [" ".join(f"jobsys-worker@{lane}.service" for lane in LANES)]
    assert data["timings"]["timeout_stop_sec"] == int(s["TimeoutStopSec"][0])


def test_without_out_units_go_to_stdout(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("systemd", "render", "--per-lane")
    assert result.exit_code == 0, result.stderr
    headers = [line for line in result.stdout.splitlines() if line.startswith("### ")]
    assert headers == [f"### jobsys-worker-{lane}.service" for lane in LANES] + [
        "### jobsys.target"
    ]
    json_result = cli("systemd", "render", "--json")
    assert json.loads(json_result.stdout)["out"] is None  # exactly one document


@pytest.mark.parametrize(
    "args",
    [
        ["--exec", "relative/jobsys"],
        ["--exec", "/opt/my jobsys/jobsys"],
        ["--working-directory", "/srv/a\nExecStartPre=/bin/rm"],
        ["--user", "root; rm"],
    ],
)
def test_unsafe_values_are_refused_before_writing(cli, tmp_path: Path, args: list[str]) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "units"
    result = cli("systemd", "render", "--out", str(out), *args)
    assert result.exit_code == 2, result
    assert "Traceback" not in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("under", "says"),
    [
        ("afile/sub", ("Not a directory",)),
        # root: no such file; anyone else: not allowed first
        ("/proc/jobsys-units", ("No such file or directory", "Permission denied")),
    ],
)
def test_an_out_folder_that_cannot_be_made_is_a_usage_error(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, under: str, says: tuple[str, ...]
) -> None:
    (tmp_path / "afile").write_text("")
    out = tmp_path / under
    result = cli("systemd", "render", "--out", str(out))
    assert result.exit_code == 2, result
    assert any(
        result.stderr.startswith(f"error: --out {out}: cannot write the unit files there: {x}\n")
        for x in says
    ), result.stderr
    assert "internal error" not in result.stderr
    assert not out.exists()


def test_a_unit_name_taken_by_a_folder_changes_nothing(cli, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    # The worker unit was replaced, then jobsys.target failed: "nothing written" was not so.
    out = tmp_path / "units"
    (out / "jobsys.target").mkdir(parents=True)
    (out / "jobsys-worker@.service").write_text("old\n")
    result = cli("systemd", "render", "--out", str(out))
    assert result.exit_code == 2, result
    assert result.stderr.startswith(
        f"error: --out {out}: cannot write the unit files there: jobsys.target is a folder\n"
    ), result.stderr
    assert (out / "jobsys-worker@.service").read_text() == "old\n"
    assert sorted(p.name for p in out.iterdir()) == ["jobsys-worker@.service", "jobsys.target"]


@pytest.mark.parametrize("existing", [True, False])
def test_a_full_disk_is_a_failure_and_changes_nothing(  # type: ignore[no-untyped-def]
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, existing: bool
) -> None:
    import errno

    out = tmp_path / "units"
    if existing:
        out.mkdir()
        (out / "jobsys-worker@.service").write_text("old\n")
    write_text = Path.write_text

    def full(self: Path, data: str, *args: object, **kwargs: object) -> int:
        if "jobsys.target" in self.name:  # the second unit file
            raise OSError(errno.ENOSPC, "No space left on device")
        return write_text(self, data, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(Path, "write_text", full)
    result = cli("systemd", "render", "--out", str(out))
    monkeypatch.undo()
    assert result.exit_code == 1, result
    assert result.stderr.startswith(
        f"error: --out {out}: could not write the unit files: No space left on device; "
        "nothing was changed\n"
    ), result.stderr
    if existing:
        assert [p.name for p in out.iterdir()] == ["jobsys-worker@.service"]
        assert (out / "jobsys-worker@.service").read_text() == "old\n"
    else:
        assert not out.exists()


def test_percent_in_a_path_is_escaped(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("systemd", "render", "--json", "--working-directory", "/srv/100%jobs")
    assert result.exit_code == 0, result.stderr
    assert "WorkingDirectory=/srv/100%%jobs\n" in result.json()["units"][0]["content"]


def test_working_directory_sets_the_target_hosts_paths(cli, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # The walkthrough: rendered in /tmp/newop for /srv/jobsys, the units pointed at
    # /tmp/newop/config and /tmp/newop/.venv/bin/jobsys.
    render_host = tmp_path / "newop"
    shutil.copytree(CONFIG_DIR, render_host / "config")
    monkeypatch.chdir(render_host)
    monkeypatch.delenv("JOBSYS_CONFIG_DIR")
    out = tmp_path / "deploy"
    # The target host's layout (systemd-analyze checks that ExecStart is executable).
    srv = tmp_path / "srv"
    (srv / ".venv" / "bin").mkdir(parents=True)
    (srv / ".venv" / "bin" / "jobsys").write_text("#!/bin/sh\n")
    (srv / ".venv" / "bin" / "jobsys").chmod(0o755)
    result = cli(
        "systemd", "render", "--out", str(out), "--user", "jobsys",
        "--working-directory", str(srv),
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    s = unit_settings((out / "jobsys-worker@.service").read_text())
    assert s["WorkingDirectory"] == [str(srv)]
    assert f"JOBSYS_CONFIG_DIR={srv}/config" in s["Environment"]
    assert s["ExecStart"] == [f"{srv}/.venv/bin/jobsys worker --lane %i --log-format json"]
    instances = [out / f"jobsys-worker@{lane}.service" for lane in LANES]
    assert verify(out / "jobsys-worker@.service", *instances, out / "jobsys.target") == ""
    stderr = " ".join(result.stderr.split())
    assert f"warning: ExecStart runs {srv}/.venv/bin/jobsys" in stderr
    assert "pass --exec PATH" in stderr
    assert (
        "warning: no database configured here: the units will start an embedded PostgreSQL "
        f"under {srv}/.jobsys unless /etc/jobsys/jobsys.env sets JOBSYS_DATABASE_URL"
    ) in stderr

    # An explicit --config-dir and --exec win. A database URL given to the render is
    # not written into the units (world-readable; it may hold a password), and the
    # render says where it must go instead, never printing it.
    as_json = cli(
        "--config-dir", str(render_host / "config"),
        "--database-url", "postgresql://jobs:pw-s3cret@db/jobs",
        "systemd", "render", "--json", "--working-directory", "/srv/jobsys",
        "--exec", "/opt/jobsys/bin/jobsys",
    )  # fmt: skip
    assert as_json.exit_code == 0, as_json.stderr
    assert as_json.json()["warnings"] == [
        "the units do not carry the database URL given here (--database-url): a unit file "
        "is readable by anyone on the host. Set JOBSYS_DATABASE_URL in /etc/jobsys/jobsys.env "
        "(mode 600, see the install steps), or the units start an embedded PostgreSQL under "
        "/srv/jobsys/.jobsys."
    ]
    assert "pw-s3cret" not in as_json.stdout + as_json.stderr
    s = unit_settings(as_json.json()["units"][0]["content"])
    assert f"JOBSYS_CONFIG_DIR={(render_host / 'config').resolve()}" in s["Environment"]
    assert s["ExecStart"] == ["/opt/jobsys/bin/jobsys worker --lane %i --log-format json"]
