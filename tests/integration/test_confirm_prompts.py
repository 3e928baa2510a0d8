"""The confirmation prompt of the destructive commands (``retry --all``, ``jobs cancel
--all``, ``jobs delete --all``, ``queues purge``...): one helper, one behaviour."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pexpect
import pytest
from _retry_support import bulk_failed_jobs
from live_support import jobsys_env
from test_bulk_actions import add_jobs, sql, table_hash

HERE = Path(__file__).resolve().parent
RETRY_STATES = (
    "SELECT md5(coalesce(string_agg(retry_state::text, ',' ORDER BY id), '')) FROM jobsys_failures"
)


def _default_sigint() -> None:
    # A test run from a background shell ignores SIGINT; the child must not inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def database_state(db_url: str) -> tuple[object, ...]:
    """Everything these commands could change: jobs, failures' retry state, audits."""
    return (
        table_hash(db_url),
        sql(db_url, RETRY_STATES)[0][0],
        sql(db_url, "SELECT count(*) FROM jobsys_retry_events")[0][0],
        sql(db_url, "SELECT count(*) FROM jobsys_bulk_actions")[0][0],
    )


@pytest.mark.parametrize(
    "command",
    [
        ("retry", "--all", "--task", "t_retry.work"),
        ("jobs", "cancel", "--all", "--queue", "sync"),
        ("jobs", "delete", "--all", "--status", "succeeded"),
        ("queues", "purge", "sync"),
    ],
    ids=["retry", "cancel", "delete", "purge"],
)
def test_one_ctrl_c_at_the_prompt_exits_130_with_nothing_changed(
    db_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    bulk_failed_jobs(db_url, 2)
    add_jobs(db_url, 3, queue="sync")
    add_jobs(db_url, 3, status="succeeded")
    before = database_state(db_url)
    env = jobsys_env(db_url, tmp_path / "home")
    env.update(TERM="dumb", JOBSYS_APP="jobsys.demo.tasks,_retry_support", PYTHONPATH=str(HERE))
    child = pexpect.spawn(sys.executable, ["-m", "jobsys", *command], env=env,
                          dimensions=(24, 100), encoding="utf-8", timeout=60,
                          preexec_fn=_default_sigint)  # fmt: skip
    try:
        child.expect(r"\[y/N\]: ")
        child.sendintr()  # one Ctrl-C, once
        child.expect(pexpect.EOF, timeout=15)
    finally:
        child.close(force=True)
    assert child.exitstatus == 130, (child.exitstatus, child.signalstatus, child.before)
    assert "Traceback" not in (child.before or "")
    assert database_state(db_url) == before
