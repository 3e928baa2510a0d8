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
