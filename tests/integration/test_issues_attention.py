"""Issues that need someone: healed issues leave the default list by themselves, the
list puts the worst first, and a retry during an open outage of the service warns."""

from __future__ import annotations

import asyncio
from typing import Any

import failures_support as fx
import psycopg
import pytest
from failures_support import spool_home  # noqa: F401  (fixture)

from jobsys.failures.recorder import record_failure
from jobsys.failures.store import FailureRow
from jobsys.issues.health import check_queues

pytestmark = pytest.mark.usefixtures("spool_home")


def failed_jobs(url: str, count: int) -> list[int]:
    """``count`` jobs that ran and failed (Procrastinate's own functions)."""
    with psycopg.connect(url, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT unnest(procrastinate_defer_jobs_v1(array_agg(ROW('profiles', "
                "'t.refresh', 0, NULL, NULL, jsonb_build_object('n', g), NULL)"
                "::procrastinate_job_to_defer_v1))) FROM generate_series(1, %s) g",
                (count,),
            ).fetchall()
        ]
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = ANY(%s)", (ids,))
        conn.execute(
            "SELECT procrastinate_finish_job_v1(id, 'failed', false) FROM unnest(%s::bigint[]) id",
            (ids,),
        )
    return ids


def retried_and_succeeded(url: str, job_id: int) -> None:
    """The job is retried (same id, as Procrastinate retries) and then succeeds."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT procrastinate_retry_job_v2(%s, now(), NULL, NULL, NULL)", (job_id,))
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,))
        conn.execute("SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (job_id,))


def _row(job_id: int, **kw: Any) -> FailureRow:
    base: dict[str, Any] = {
        "job_id": job_id,
        "task": "t.refresh",
        "queue": "profiles",
        "attempt": 1,
        "error_class": "builtins.KeyError",
        "message": f"'key{job_id}'",
        "kind": "transient",
        "retryable": True,
        "account_id": str(job_id),
    }
    base.update(kw)
    return FailureRow(**base)


def issue_row(url: str) -> dict[str, Any]:
    (row,) = fx.rows(url, "SELECT status, regression, resolved_by, details FROM jobsys_issues")
    return row


def record(url: str, job_ids: list[int]) -> None:
    from jobsys.db.connect import connect

    async def go() -> None:
        async with connect(url) as conn:
            for job in job_ids:
                await record_failure(conn, _row(job), fx.repo_config())

    asyncio.run(go())


def health_pass(url: str) -> list[int]:
    """One pass of the minutely queue-health check; the issues it found healed."""
    from jobsys.db.connect import connect

    async def go() -> list[int]:
        async with connect(url) as conn:
            return list((await check_queues(conn, fx.repo_config()))["healed"])

    return asyncio.run(go())


def test_an_issue_whose_failures_all_succeeded_since_heals_and_recurs(
    cli: Any, db_url: str
) -> None:
    jobs = failed_jobs(db_url, 3)
    record(db_url, jobs)
    assert health_pass(db_url) == []
    retried_and_succeeded(db_url, jobs[0])
    retried_and_succeeded(db_url, jobs[1])
    assert health_pass(db_url) == []  # one job still failed
    assert issue_row(db_url)["status"] == "open"
    retried_and_succeeded(db_url, jobs[2])
    [healed] = health_pass(db_url)
    row = issue_row(db_url)
    assert (row["status"], row["resolved_by"]) == ("resolved", "auto")
    assert row["details"]["resolved_reason"] == "healed"

    url = ("--database-url", db_url)
    assert cli(*url, "issues", "list", "--json").json()["items"] == []
    every = cli(*url, "issues", "list", "--all")
    assert every.exit_code == 0 and "resolved (healed)" in every.stdout

    # it happens again: open again, as a regression
    record(db_url, failed_jobs(db_url, 1))
    row = issue_row(db_url)
    assert (row["status"], row["regression"]) == ("open", True)
    # why it resolved no longer holds (`issues show` printed `resolved_reason: healed`)
    assert "resolved_reason" not in row["details"]
    listed = cli(*url, "issues", "list", "--json").json()["items"]
    assert [i["id"] for i in listed] == [healed]
    assert "healed" not in cli(*url, "issues", "show", str(healed)).stdout

    # resolved by hand after healing again, then reopened by hand: no stale reason either
    resolved = fx.rows(
        db_url,
        "UPDATE jobsys_issues SET status = 'resolved', resolved_at = now(), "
        """details = details || '{"resolved_reason": "healed"}' RETURNING id""",
    )
    assert resolved == [{"id": healed}]
    assert cli(*url, "issues", "reopen", str(healed)).exit_code == 0
    assert "resolved_reason" not in issue_row(db_url)["details"]


def test_the_default_list_puts_the_worst_first(cli: Any, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for title, accounts, occurrences, ago in (
            ("recent but small", 1, 2, 0),
            ("login wall", 40, 300, 30),
            ("many occurrences", 1, 900, 10),
            ("muted one", 99, 999, 0),
        ):
            conn.execute(
                "INSERT INTO jobsys_issues (fingerprint, kind, title, status, muted_until, "
                "affected_accounts, occurrences, last_seen) VALUES (md5(%s), 'job_failure', %s, "
                "%s, %s, %s, %s, now() - make_interval(mins => %s))",
                (
                    title,
                    title,
                    "muted" if title == "muted one" else "open",
                    "2999-01-01" if title == "muted one" else None,
                    accounts,
                    occurrences,
                    ago,
                ),
            )
    url = ("--database-url", db_url)
    titles = [i["title"] for i in cli(*url, "issues", "list", "--json").json()["items"]]
    assert titles == ["login wall", "many occurrences", "recent but small"]
    recent = cli(*url, "issues", "list", "--sort", "recent", "--json").json()["items"]
    assert [i["title"] for i in recent] == ["recent but small", "many occurrences", "login wall"]
    assert len(cli(*url, "issues", "list", "--all", "--json").json()["items"]) == 4
    assert cli(*url, "issues", "list", "--sort", "worst").exit_code == 2


def test_issues_retry_during_an_open_outage_warns_and_asks(cli: Any, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        outage = conn.execute(
            "INSERT INTO jobsys_issues (fingerprint, kind, title, status, service) VALUES "
            "('service_outage:ai', 'service_outage', 'ai service down', 'open', 'ai') "
            "RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
        issue = conn.execute(
            "INSERT INTO jobsys_issues (fingerprint, kind, title, status, service) VALUES "
            "('job_failure:x', 'job_failure', 'TransientError in demo.story.faces', 'open', "
            "'ai') RETURNING id"
        ).fetchone()[0]  # type: ignore[index]
    url = ("--database-url", db_url)
    declined = cli(*url, "issues", "retry", str(issue), input="n\n")
    assert declined.exit_code == 2
    assert f"open outage (issue {outage}: ai service down)" in declined.stderr
    assert "Retry during the outage anyway?" in declined.stderr
    assert declined.stderr.rstrip().splitlines()[-2:] == [
        "error: not confirmed; nothing was changed.",
        "Pass --yes to confirm without a prompt.",
    ]
    dry = cli(*url, "issues", "retry", str(issue), "--dry-run")
    assert "open outage" not in dry.stderr  # a preview changes nothing: no question
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE jobsys_issues SET status = 'resolved' WHERE id = %s", (outage,))
    after = cli(*url, "issues", "retry", str(issue), "--yes")
    assert "open outage" not in after.stderr
