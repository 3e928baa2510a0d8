"""A read command loads only what it reads with: no ORM (SQLAlchemy, the migrations'
models), no Alembic, no Procrastinate. Importing the ORM models alone took ~0.5 s of a
`pipelines list` on a loaded 2-core machine (the bench's read target is 0.5 s in all).
Nor what a task only needs when it runs: the retry machinery behind the automatic retry
task, and the demo's simulated AI service (an HTTP server), which every command that
checks the application's tasks imported with their modules (~25 ms on 2 cores)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from test_json_contract import LISTS, READS, one_of_each

HEAVY = ("sqlalchemy", "alembic", "procrastinate")
#: Modules (full names) that a task imports when it runs, never at import time.
RUN_TIME_ONLY = ("jobsys.retry.engine", "http.server")
CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


def test_no_read_command_imports_the_orm_alembic_procrastinate_or_run_time_modules(
    db_url: str, tmp_path: Path
) -> None:
    ids = one_of_each(db_url)
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(
        JOBSYS_DATABASE_URL=db_url, JOBSYS_HOME=str(tmp_path), JOBSYS_CONFIG_DIR=str(CONFIG_DIR)
    )
    # `db check` compares the models with the database (drift): it needs them
    skip = {("db", "check"), ("config", "check"), ("config", "show"), ("schedule", "check")}
    reads = {path: extra for path, extra in READS.items() if path not in skip}
    commands = [[*path, "--json"] for path in sorted(LISTS)] + [
        [*path, *(a.format(**ids) for a in extra), "--json"] for path, extra in reads.items()
    ]
    heavy: dict[str, list[str]] = {}
    for argv in commands:
        result = subprocess.run(
            [sys.executable, "-X", "importtime", "-m", "jobsys", *argv],
            capture_output=True, text=True, env=env, check=False,
        )  # fmt: skip
        assert result.returncode in (0, 2), (argv, result.stderr[-500:])
        imported = {line.split("|")[-1].strip() for line in result.stderr.splitlines()}
        found = sorted(
            ({name.split(".")[0] for name in imported} & set(HEAVY))
            | (imported & set(RUN_TIME_ONLY))
        )
        if found:
            heavy[" ".join(argv)] = found
    assert heavy == {}
