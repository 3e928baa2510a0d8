"""Every "no such id" message has one form (newuser L14): ``no <thing> <id>.`` and the
command that lists them, exit 1."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    ("args", "message", "listed_by"),
    [
        (["failures", "show", "999"], "no failure 999.", "jobsys failures list"),
        (["failures", "list", "--before", "999"], "no failure 999.", "jobsys failures list"),
        (["pipelines", "show", "999"], "no pipeline 999.", "jobsys pipelines list"),
        (["pipelines", "cancel", "999"], "no pipeline 999.", "jobsys pipelines list"),
        (["issues", "show", "999"], "no issue 999.", "jobsys issues list --status all"),
        (["issues", "resolve", "999"], "no issue 999.", "jobsys issues list --status all"),
        (["jobs", "show", "999999"], "no job 999999.", "jobsys jobs list"),
        (["jobs", "retry", "999999"], "no job 999999.", "jobsys jobs list"),
        (["retry", "999"], "no failure 999; nothing was retried.", "jobsys failures list"),
        (
            ["retry", "--all", "--issue", "999"],
            "no issue 999.",
            "jobsys issues list --status all",
        ),
        (["fanout", "show", "999"], "no fan-out run 999.", "jobsys fanout list"),
        (
            ["workers", "show", "nohost:1"],
            "no worker process 'nohost:1'.",
            "jobsys workers list --all",
        ),
    ],
)
def test_missing_ids_read_alike(  # type: ignore[no-untyped-def]
    cli, db_url: str, args: list[str], message: str, listed_by: str
) -> None:
    result = cli("--database-url", db_url, *args)
    assert (result.exit_code, result.stderr) == (
        1,
        f"error: {message}\nList them with `{listed_by}`.\n",
    )
