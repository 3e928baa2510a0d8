"""``jobsys --help`` must not import the heavy libraries (start-up speed)."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("procrastinate", "psycopg", "sqlalchemy", "alembic", "pydantic", "croniter")


def test_help_imports_nothing_heavy() -> None:
    proc = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "jobsys", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = {
        line.split("|")[-1].strip().split(".")[0]
        for line in proc.stderr.splitlines()
        if "|" in line
    }
    assert "jobsys" in imported
    assert not imported & set(HEAVY), imported & set(HEAVY)


def test_every_command_has_help() -> None:
    from jobsys.cli.main import app

    def walk(typer_app, prefix):  # type: ignore[no-untyped-def]
        for cmd in typer_app.registered_commands:
            yield (*prefix, cmd.name or cmd.callback.__name__), cmd.callback
        for group in typer_app.registered_groups:
            yield from walk(group.typer_instance, (*prefix, group.name))

    for path, callback in walk(app, ()):
        assert callback.__doc__, f"jobsys {' '.join(path)} has no help text"


def test_a_run_builds_only_its_command_and_reads_as_the_whole_app(  # type: ignore[no-untyped-def]
    capsys,
) -> None:
    """Typer converts every registered command on each run; ``main`` builds only the one
    asked for, so each command's help, and its usage errors, must read the same as from
    the whole app."""
    import typer

    from jobsys.cli import main

    assert main.command_name(["--database-url", "jobs", "--debug", "failures", "list"]) == (
        "failures"
    )
    assert main.command_name(["--app", "top", "-v", "top"]) == "top"
    assert main.command_name(["--help"]) is None
    assert main.command_name(["jobz", "list"]) is None  # a typo: the whole app suggests
    names = [name for name, _ in main._ENTRIES]
    assert sorted(getattr(typer.main.get_command(main.app), "commands", {})) == sorted(names)
    assert list(getattr(typer.main.get_command(main.build("jobs")), "commands", {})) == ["jobs"]

    def output(argv: list[str], *, alone: bool) -> tuple[int, str, str]:
        if alone:
            code = main.main(argv)
        else:
            code = main.app(args=argv, prog_name="jobsys", standalone_mode=False) or 0
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    for name in names:
        for argv in ([name, "--help"], [name, "--no-such-option"]):
            try:
                expected = output(argv, alone=False)
            except typer.TyperException as exc:
                exc.show()
                captured = capsys.readouterr()
                expected = (exc.exit_code, captured.out, captured.err)
            assert output(argv, alone=True) == expected, argv


def test_piped_output_is_wide_and_whole(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    """Not a terminal: COLUMNS or 200 wide, and a table wider than that keeps its words."""
    from jobsys.cli import _output

    monkeypatch.delenv("COLUMNS", raising=False)
    assert _output.piped_width() == _output.PIPED_WIDTH == 200
    monkeypatch.setenv("COLUMNS", "120")
    assert _output.piped_width() == 120
    assert _output.stdout_console().width == 120  # capsys' stdout is not a terminal
    monkeypatch.setenv("COLUMNS", "30")
    _output.table(
        [{"queue": "video_processing_queue", "concurrency": 2, "url": "postgresql://u@h/db"}],
        ["queue", "concurrency", "url"],
    )
    out = capsys.readouterr().out
    assert "video_processing_queue" in out and "concurrency" in out
    assert "postgresql://u@h/db" in out


def test_stderr_messages_are_one_line_each(monkeypatch, capsys) -> None:  # type: ignore[no-untyped-def]
    from jobsys.cli import _output

    monkeypatch.setenv("COLUMNS", "40")
    message = "a message much longer than forty columns, which must stay on one line"
    _output.say(message)
    _output.error(message, hint=message)
    assert capsys.readouterr().err.splitlines() == [message, f"error: {message}", message]


def test_demo_banner_says_how_to_run_jobsys() -> None:
    from jobsys.cli.demo import banner

    burst = {"accounts": 200, "deferred": {"a": 3, "b": 4}}
    text = banner(burst, ".venv/bin/jobsys")
    assert "`.venv/bin/jobsys dashboard`" in text
    assert "`source .venv/bin/activate`" in text
    assert "deferred 7 demo jobs" in text
    plain = banner(burst, "jobsys")
    assert "`jobsys dashboard`" in plain and "activate" not in plain


def test_jobsys_command_is_this_installation(monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from pathlib import Path

    from jobsys.cli._context import jobsys_command

    script = Path(sys.executable).with_name("jobsys")
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing called jobsys on PATH
    monkeypatch.chdir(script.parents[2])
    assert jobsys_command() == str(script.relative_to(script.parents[2]))
    monkeypatch.setenv("PATH", str(script.parent))
    assert jobsys_command() == "jobsys"


def test_event_lines_leave_out_unset_values(capsys) -> None:  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    from jobsys.cli import _output

    at = datetime(2026, 11, 29, 8, 30, 1, 250000, tzinfo=UTC)
    _output.event_line(
        at, "job_failures_changed", {"kind": "runtime", "queue": None, "ids": [3, 4]}
    )
    assert (
        capsys.readouterr().out == "08:30:01.250 job_failures_changed       kind=runtime ids=3,4\n"
    )
