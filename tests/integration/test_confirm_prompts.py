"""The confirmation prompt of the destructive commands (``retry --all``, ``jobs cancel
--all``, ``jobs delete --all``, ``queues purge``...): one helper, one behaviour."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import Any

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


#: The commands that ask from inside ``asyncio.run`` (their service's coroutine).
ASKED_IN_THE_LOOP = {
    "retry": ("retry", "--all", "--task", "t_retry.work"),
    "cancel": ("jobs", "cancel", "--all", "--queue", "sync"),
    "delete": ("jobs", "delete", "--all", "--status", "succeeded"),
    "purge": ("queues", "purge", "sync"),
}
#: Every command that asks before it changes something.
ASKING = {
    **ASKED_IN_THE_LOOP,
    "pause-all": ("queues", "pause", "--all"),
    "downgrade": ("db", "downgrade", "base"),
}


def something_to_act_on(db_url: str) -> tuple[object, ...]:
    """Failures to retry, jobs to cancel and to delete; the state before."""
    bulk_failed_jobs(db_url, 2)
    add_jobs(db_url, 3, queue="sync")
    add_jobs(db_url, 3, status="succeeded")
    return database_state(db_url)


@pytest.mark.parametrize("command", ASKED_IN_THE_LOOP.values(), ids=ASKED_IN_THE_LOOP)
def test_one_ctrl_c_at_the_prompt_exits_130_with_nothing_changed(
    db_url: str, tmp_path: Path, command: tuple[str, ...]
) -> None:
    before = something_to_act_on(db_url)
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


REFUSED = ["error: not confirmed; nothing was changed.", "Pass --yes to confirm without a prompt."]


@pytest.mark.parametrize("command", ASKING.values(), ids=ASKING)
@pytest.mark.parametrize("answer", ["", "n\n"], ids=["no-terminal", "no"])
def test_every_prompt_not_confirmed_is_the_same_refusal(
    cli: Any, db_url: str, command: tuple[str, ...], answer: str
) -> None:
    before = something_to_act_on(db_url)
    result = cli("--database-url", db_url, *command, input=answer)
    assert result.exit_code == 2, result.stderr
    assert "[y/N]: " in result.stderr
    assert result.stderr.rstrip().splitlines()[-2:] == REFUSED, result.stderr
    assert database_state(db_url) == before
    assert sql(db_url, "SELECT count(*) FROM jobsys_queue_pauses")[0][0] == 0
    assert sql(db_url, "SELECT count(*) FROM alembic_version")[0][0] == 1


@pytest.mark.parametrize(
    ("command", "verb"),
    [(ASKING["cancel"], "cancel"), (ASKING["delete"], "delete"), (ASKING["purge"], "cancel")],
    ids=["cancel", "delete", "purge"],
)
def test_nothing_matching_says_so_and_does_not_ask(
    cli: Any, db_url: str, command: tuple[str, ...], verb: str
) -> None:
    add_jobs(db_url, 2, queue="default")  # waiting, elsewhere: matches none of them
    before = database_state(db_url)
    result = cli("--database-url", db_url, *command, input="")
    assert result.exit_code == 0, result.stderr
    assert "[y/N]" not in result.stderr
    assert f"0 jobs to {verb}" in result.stdout
    assert f"nothing to {verb}; nothing was changed" in result.stdout
    assert database_state(db_url) == before  # no audit row either
    data = cli("--database-url", db_url, *command, "--json", input="").json()
    assert (data["total"], data["audit_id"], data["done"]) == (0, None, {})
