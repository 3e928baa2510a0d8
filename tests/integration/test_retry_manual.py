"""``jobsys retry``: every reason code reached by a real scenario (real worker, real jobs)."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from _retry_support import (
    BEHAVIOUR,
    RAN,
    TEST_QUEUE,
    defer,
    drain,
    failed_job,
    failure_of,
    make_issue,
    procrastinate_app,
    sql,
)

from jobsys import tasks as task_registry

BOX = re.compile("[\u2500-\u257f]")  # box-drawing characters: a Rich table's borders


async def acli(cli: Any, *args: str) -> Any:
    """The in-process CLI from an async test (it runs its own event loop)."""
    return await asyncio.to_thread(cli, *args)


async def retry_json(cli: Any, db_url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = await acli(cli, "--database-url", db_url, "retry", *args, "--json")
    assert "Traceback" not in result.stderr, result.stderr
    assert result.stdout, result.stderr
    return result.exit_code, result.json()


def verdict(data: dict[str, Any]) -> str:
    assert len(data["results"]) == 1, data
    return str(data["results"][0]["decision"])


async def test_retried_then_outcome_then_already_retried(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async with procrastinate_app(db_url) as app:
        job_id, failure_id = await failed_job(app, "r1")
        code, data = await retry_json(cli, db_url, str(failure_id))
        assert code == 0
        assert data["results"] == [
            {
                "failure_id": failure_id,
                "job_id": job_id,
                "decision": "retried",
                "detail": "retried",
                "new_job_id": job_id,
            }
        ]
        assert sql(db_url, "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)) == [
            {"status": "todo"}
        ]
        state = sql(db_url, "SELECT retry_state FROM jobsys_failures WHERE id = %s", (failure_id,))
        state = state[0]["retry_state"]
        assert state["outcome"] == "pending"
        assert state["actor"] == "tester" or state["actor"]
        assert state["attempts"] == 1 and state["retried_job_id"] == job_id
        # Retried while still waiting: refused, not retried twice.
        code, data = await retry_json(cli, db_url, str(failure_id))
        assert (code, verdict(data)) == (3, "skipped_already_retried")
        # The retried job now succeeds: still already retried, outcome learnt on read.
        BEHAVIOUR["r1"] = "ok"
        await drain(app, [TEST_QUEUE])
        code, data = await retry_json(cli, db_url, str(failure_id))
        assert (code, verdict(data)) == (3, "skipped_already_retried")
        assert "succeeded" in data["results"][0]["detail"]
        state = sql(db_url, "SELECT retry_state FROM jobsys_failures WHERE id = %s", (failure_id,))
        assert state[0]["retry_state"]["outcome"] == "succeeded"
        events = sql(
            db_url,
            "SELECT decision, new_job_id FROM jobsys_retry_events"
            " WHERE failure_id = %s ORDER BY id",
            (failure_id,),
        )
        assert [e["decision"] for e in events] == [
            "retried",
            "skipped_already_retried",
            "skipped_already_retried",
        ]
        assert events[0]["new_job_id"] == job_id


async def test_failed_again_may_be_retried_again(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async with procrastinate_app(db_url) as app:
        job_id, failure_id = await failed_job(app, "again")
        assert (await retry_json(cli, db_url, str(failure_id)))[0] == 0
        await drain(app, [TEST_QUEUE])  # fails again: a second failure row
        second = await failure_of(app, job_id)
        assert second != failure_id
        # Both rows name the same job: exactly one retries it, the newest (it decides).
        code, data = await retry_json(cli, db_url, str(failure_id), str(second))
        assert code == 3
        assert [r["decision"] for r in data["results"]] == ["skipped_superseded", "retried"]
        state = sql(db_url, "SELECT retry_state FROM jobsys_failures WHERE id = %s", (second,))
        assert state[0]["retry_state"]["attempts"] == 1


async def test_authentication_and_not_retryable_are_refused(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async with procrastinate_app(db_url) as app:
        job_id, auth_failure = await failed_job(app, "auth", "auth")
        _, runtime_failure = await failed_job(app, "nr", "fail")
    sql(db_url, "UPDATE jobsys_failures SET retryable = false WHERE id = %s", (runtime_failure,))
    result = await acli(
        cli, "--database-url", db_url, "retry", str(auth_failure), str(runtime_failure)
    )
    assert result.exit_code == 3
    assert f"failure {auth_failure} (job {job_id}): skipped_authentication: " in result.stdout
    assert "retrying would burn the account" in result.stdout
    assert (
        f"failure {runtime_failure}" in result.stdout and "skipped_not_retryable" in result.stdout
    )
    assert sql(db_url, "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)) == [
        {"status": "failed"}
    ]


async def test_not_failed_when_the_job_ran_again_by_another_path(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    import datetime

    async with procrastinate_app(db_url) as app:
        job_id, failure_id = await failed_job(app, "other")
        # Retried outside jobsys (Procrastinate's own retry), and it succeeded.
        await app.job_manager.retry_job_by_id_async(job_id, datetime.datetime.now(datetime.UTC))
        BEHAVIOUR["other"] = "ok"
        await drain(app, [TEST_QUEUE])
    code, data = await retry_json(cli, db_url, str(failure_id))
    assert (code, verdict(data)) == (3, "skipped_not_failed")
    assert data["results"][0]["detail"] == "the job is succeeded, not failed"


async def test_unknown_task(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async with procrastinate_app(db_url) as app:
        _, failure_id = await failed_job(app, "gone")
    spec = task_registry.get("t_retry.work")
    assert spec is not None
    task_registry.unregister("t_retry.work")
    try:
        code, data = await retry_json(cli, db_url, str(failure_id))
    finally:
        task_registry.register(spec)
    assert (code, verdict(data)) == (3, "skipped_unknown_task")


async def test_conflict_with_a_waiting_job_holding_the_queueing_lock(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async with procrastinate_app(db_url) as app:
        job_id, failure_id = await failed_job(app, "locked", queueing_lock="account-7")
        waiting = await defer(app, "locked-2", queueing_lock="account-7")
    code, data = await retry_json(cli, db_url, str(failure_id))
    assert (code, verdict(data)) == (3, "conflict")
    assert sql(db_url, "SELECT id, status FROM procrastinate_jobs ORDER BY id") == [
        {"id": job_id, "status": "failed"},
        {"id": waiting, "status": "todo"},
    ]


async def test_unknown_ids_change_nothing(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async with procrastinate_app(db_url) as app:
        _, failure_id = await failed_job(app, "u1")
    result = await acli(cli, "--database-url", db_url, "retry", str(failure_id), "999998", "999999")
    assert result.exit_code == 1
    assert "no failure 999998, 999999; nothing was retried." in result.stderr
    assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--all"], 2, "--all without any filter would retry every failure."),
        ([], 2, "give failure ids, or --all with filters"),
        (["--all", "--kind", "bogus"], 2, "--kind 'bogus' is not a failure kind."),
        (["--all", "--since", "yesterday"], 2, "--since 'yesterday' is neither a duration"),
        (["--all", "--since", "1h", "--until", "2h"], 2, "--since must be before --until."),
        (["--all", "--kind", "runtime"], 1, "no failure matches these filters"),
        (["--all", "--issue", "4242"], 1, "no issue 4242."),
        (["1", "--kind", "runtime"], 2, "filters apply to --all only"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(
    cli, db_url: str, args: list[str], code: int, message: str
) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "retry", *args)
    assert result.exit_code == code, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


async def test_issue_retry_refuses_authentication(settings, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """The ``jobsys issues retry ISSUE_ID`` path (``cli.retry.issues_retry`` -> this service)."""
    import typer

    from jobsys.cli.retry import issues_retry
    from jobsys.config.application import load_config
    from jobsys.errors import NotFoundError
    from jobsys.retry.service import RetryRequest, retry

    config = load_config(settings)
    issue = make_issue(db_url)
    async with procrastinate_app(db_url) as app:
        _, runtime = await failed_job(app, "i1")
        _, auth = await failed_job(app, "i2", "auth")
    sql(db_url, "UPDATE jobsys_failures SET issue_id = %s", (issue,))
    dry = await retry(settings, config, RetryRequest(issue=issue, dry_run=True))
    assert (dry.counts, dry.dry_run) == ({"skipped_authentication": 1, "would_retry": 1}, True)
    report = await retry(settings, config, RetryRequest(issue=issue))
    assert {d.failure_id: d.decision for d in report.decisions} == {
        runtime: "retried",
        auth: "skipped_authentication",
    }
    with pytest.raises(NotFoundError, match="no issue 4242"):
        await retry(settings, config, RetryRequest(issue=4242))
    # The command function is ready to attach to the issues group.
    group = typer.Typer()
    group.command("retry")(issues_retry)
    assert issues_retry.__doc__


def test_bulk_asks_for_confirmation_unless_yes(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from _retry_support import bulk_failed_jobs

    bulk_failed_jobs(db_url, 4)
    bulk_failed_jobs(db_url, 1, kind="authentication")
    declined = cli(
        "--database-url", db_url, "retry", "--all", "--task", "t_retry.work", input="n\n"
    )
    assert declined.exit_code == 2
    assert "Retry 4 of 5 failures?" in declined.stdout + declined.stderr
    assert "skipped_authentication" in declined.stderr  # the preview, on stderr
    assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]
    accepted = cli(
        "--database-url", db_url, "retry", "--all", "--task", "t_retry.work", input="y\n"
    )
    assert accepted.exit_code == 3  # one authentication failure was refused
    assert "retried" in accepted.stdout and "skipped_authentication" in accepted.stdout
    assert sql(db_url, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'todo'") == [
        {"n": 4}
    ]


async def test_jobs_retry_goes_through_the_same_rules(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async with procrastinate_app(db_url) as app:
        job_id, failure_id = await failed_job(app, "jr1")
        result = await acli(cli, "--database-url", db_url, "jobs", "retry", str(job_id), "--json")
        assert result.exit_code == 0, result.stderr
        assert verdict(result.json()) == "retried"
        assert result.json()["results"][0]["failure_id"] == failure_id
        # The same job again: refused by the rules, exit 3, not retried twice.
        result = await acli(cli, "--database-url", db_url, "jobs", "retry", str(job_id), "--json")
        assert (result.exit_code, verdict(result.json())) == (3, "skipped_already_retried")
        events = sql(
            db_url,
            "SELECT count(*) AS n FROM jobsys_retry_events WHERE failure_id = %s",
            (failure_id,),
        )
        assert events == [{"n": 2}]
        # A job that never failed, and one that does not exist: exit 1, nothing written.
        ok_id = await defer(app, "jr2")
        result = await acli(cli, "--database-url", db_url, "jobs", "retry", str(ok_id))
        assert result.exit_code == 1
        assert f"job {ok_id} has no recorded failure" in result.stderr
        result = await acli(cli, "--database-url", db_url, "jobs", "retry", "999999")
        assert (result.exit_code, "no job 999999" in result.stderr) == (1, True)


async def test_older_failure_is_superseded_by_a_newer_authentication_failure(
    cli, db_url: str
) -> None:  # type: ignore[no-untyped-def]
    """Story 3: a job failed (runtime), was retried, then hit the login wall. Retrying
    the older failure must not re-run the job: the newest failure decides."""
    async with procrastinate_app(db_url) as app:
        job_id, first = await failed_job(app, "sup1", mode="fail")
        code, data = await retry_json(cli, db_url, str(first))
        assert (code, verdict(data)) == (0, "retried")
        BEHAVIOUR["sup1"] = "auth"
        await drain(app, [TEST_QUEUE])
        (newest,) = [
            r["id"]
            for r in sql(
                db_url,
                "SELECT id FROM jobsys_failures WHERE job_id = %s AND kind = 'authentication'",
                (job_id,),
            )
        ]
        runs_before = len(RAN)
        code, data = await retry_json(cli, db_url, str(first))
        assert (code, verdict(data)) == (3, "skipped_superseded")
        assert f"failure {newest}, authentication" in data["results"][0]["detail"]
        code, data = await retry_json(cli, db_url, str(newest))
        assert (code, verdict(data)) == (3, "skipped_authentication")
        await drain(app, [TEST_QUEUE])
        assert len(RAN) == runs_before  # the job did not run again
        assert sql(db_url, "SELECT status FROM procrastinate_jobs WHERE id = %s", (job_id,)) == [
            {"status": "failed"}
        ]


def rerun_is_already_done(cli: Any, args: tuple[str, ...]) -> dict[str, Any]:
    """``args`` (a bulk retry of 3 failures, run once by alice, then one job failed
    again) run again: exit 0 and "already done", in JSON and for a human."""
    rerun = cli(*args, "--json")
    assert rerun.exit_code == 0, rerun.stdout
    data: dict[str, Any] = rerun.json()
    assert data["counts"] == {"skipped_already_retried": 2, "skipped_superseded": 1}
    human = cli(*args)
    assert human.exit_code == 0, human.stderr
    assert (
        "already done: 2 failures were already retried (by alice), 1 failure superseded by a "
        "newer failure of its job; nothing left to retry"
    ) in human.stderr
    return data


def test_bulk_rerun_after_a_retried_job_failed_again_is_already_done(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """Story 5: re-running a bulk retry is harmless. A job we retried that failed again
    leaves its older failure superseded: for --all and `issues retry` that is work
    already handled (exit 0); named by id it is still refused (exit 3)."""
    from _retry_support import bulk_failed_jobs, fail_again

    issue = make_issue(db_url)
    ids = bulk_failed_jobs(db_url, 3, issue_id=issue)
    args = ("--database-url", db_url, "retry", "--all", "--issue", str(issue), "--yes")
    assert cli(*args, env={"JOBSYS_OPERATOR": "alice"}).exit_code == 0
    newer = fail_again(db_url, ids[0])  # the retried job hit the login wall: a newer failure
    rerun_is_already_done(cli, args)
    by_issue = cli("--database-url", db_url, "issues", "retry", str(issue), "--yes")
    assert by_issue.exit_code == 0, by_issue.stderr
    by_id = cli("--database-url", db_url, "retry", str(ids[0]))
    assert by_id.exit_code == 3
    assert f"skipped_superseded: the job failed again since (failure {newer}" in by_id.stdout
    assert "retry it instead" in by_id.stdout


def test_bulk_rerun_is_already_done_once_the_newer_failure_was_retried(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """newuser M1: a job we retried failed again (transient, in no issue) and that newer
    failure was retried (as the automatic retry does). Re-running the bulk retry, while
    the job waits and after it succeeded, is already done (exit 0), and the verdict
    tells what became of the job instead of "retry it instead"."""
    from _retry_support import bulk_failed_jobs, fail_again

    issue = make_issue(db_url)
    ids = bulk_failed_jobs(db_url, 3, issue_id=issue)
    url = ("--database-url", db_url)
    args = (*url, "retry", "--all", "--issue", str(issue), "--yes")
    assert cli(*args, env={"JOBSYS_OPERATOR": "alice"}).exit_code == 0
    newer = fail_again(db_url, ids[0], kind="transient")
    assert cli(*url, "retry", str(newer)).exit_code == 0
    [job] = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (newer,))
    for now in ("is waiting to run again", "has succeeded since"):
        data = rerun_is_already_done(cli, args)
        [detail] = [r["detail"] for r in data["results"] if r["failure_id"] == ids[0]]
        assert detail == (
            f"the job failed again since (failure {newer}, transient) and {now}: "
            "nothing left to retry"
        )
        by_id = cli(*url, "retry", str(ids[0]))
        assert by_id.exit_code == 3  # named by id: refused is refused
        assert detail in by_id.stdout and "retry it instead" not in by_id.stdout
        # the retried job runs and succeeds
        sql(
            db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job["job_id"],)
        )
        sql(db_url, "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (job["job_id"],))


def test_dry_run_json_claims_no_retry(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from _retry_support import bulk_failed_jobs

    issue = make_issue(db_url)
    [failure] = bulk_failed_jobs(db_url, 1, issue_id=issue)
    [auth] = bulk_failed_jobs(db_url, 1, kind="authentication", issue_id=issue)
    for target in ([str(failure), str(auth)], ["--all", "--issue", str(issue)]):
        result = cli("--database-url", db_url, "retry", *target, "--dry-run", "--json")
        assert result.exit_code == 0, result.stderr
        data = result.json()
        assert (data["dry_run"], data["batch_id"]) == (True, None)
        assert (data["retried"], data["would_retry"], data["refused"]) == (0, 1, 1)
        assert data["counts"] == {"skipped_authentication": 1, "would_retry": 1}
        rows = {r["failure_id"]: r for r in data["results"]}
        assert rows[failure]["decision"] == "would_retry"
        assert rows[failure]["detail"] == "would be retried"
        assert rows[failure]["new_job_id"] is None
        assert rows[auth]["decision"] == "skipped_authentication"
    assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]
    # The real run keeps its contract: "retried", the job, a batch.
    real = cli("--database-url", db_url, "retry", str(failure), "--json").json()
    assert (real["dry_run"], real["retried"], real["would_retry"]) == (False, 1, 0)
    assert real["batch_id"] and real["results"][0]["decision"] == "retried"
    assert real["results"][0]["new_job_id"] == real["results"][0]["job_id"]


def test_bulk_dry_run_lists_what_would_be_retried_and_refused(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from _retry_support import bulk_failed_jobs

    issue = make_issue(db_url)
    [failure] = bulk_failed_jobs(db_url, 1, issue_id=issue)
    jobs = {r["id"]: r["job_id"] for r in sql(db_url, "SELECT id, job_id FROM jobsys_failures")}
    one = cli("--database-url", db_url, "retry", "--all", "--issue", str(issue), "--dry-run")
    assert one.exit_code == 0, one.stderr
    lines = one.stdout.splitlines()
    assert lines[0] == "1 failure matched; dry run, nothing was changed"
    # the one table renderer, piped: no box, one line per row, whole words
    assert lines[1:3] == ["decision     failures", "would_retry         1"], lines
    assert not BOX.search(one.stdout), one.stdout
    assert f"  failure {failure} (job {jobs[failure]}): would be retried" in lines
    [auth] = bulk_failed_jobs(db_url, 1, kind="authentication", issue_id=issue)
    job = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (auth,))[0]["job_id"]
    two = cli("--database-url", db_url, "retry", "--all", "--issue", str(issue), "--dry-run")
    lines = two.stdout.splitlines()
    assert lines[0] == "2 failures matched; dry run, nothing was changed"
    assert lines[1:4] == [
        "decision                failures",
        "skipped_authentication         1",
        "would_retry                    1",
    ], lines
    issues_retry = cli("--database-url", db_url, "issues", "retry", str(issue), "--dry-run")
    assert issues_retry.exit_code == 0, issues_retry.stderr
    assert not BOX.search(issues_retry.stdout + issues_retry.stderr), issues_retry
    assert "skipped_authentication         1" in issues_retry.stdout + issues_retry.stderr
    delete = cli("--database-url", db_url, "jobs", "delete", "--all", "--everything", "--dry-run")
    assert delete.exit_code == 0, delete.stderr
    assert "matched  jobs" in delete.stdout + delete.stderr, delete
    assert not BOX.search(delete.stdout + delete.stderr), delete
    assert any(
        line.startswith(f"  failure {auth} (job {job}): would be refused, skipped_authentication: ")
        for line in lines
    ), lines


def test_unconfirmed_without_a_terminal_hints_at_yes(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    from _retry_support import bulk_failed_jobs

    bulk_failed_jobs(db_url, 2)
    result = cli("--database-url", db_url, "retry", "--all", "--task", "t_retry.work", input="")
    assert result.exit_code == 2
    assert "Retry 2 of 2 failures? [y/N]: " in result.stderr
    assert result.stderr.rstrip().splitlines()[-2:] == [
        "error: not confirmed; nothing was changed.",
        "Pass --yes to confirm without a prompt.",
    ]
    assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]


def test_bulk_retry_of_a_failure_never_retried_but_superseded_is_partial(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """The job failed again on its own attempts (another error, outside the issue) and
    nobody retried it: "nothing left to retry" would be false; exit 3 says otherwise."""
    from _retry_support import bulk_failed_jobs, fail_again, make_issue, sql

    issue = make_issue(db_url)
    (failure,) = bulk_failed_jobs(db_url, 1, issue_id=issue)
    newer = fail_again(db_url, failure, kind="runtime")
    result = cli("--database-url", db_url, "issues", "retry", str(issue), "--yes")
    assert result.exit_code == 3, result.stdout + result.stderr
    assert "nothing left to retry" not in result.stdout + result.stderr
    assert "retry it instead" in result.stdout + result.stderr
    assert sql(db_url, "SELECT status::text AS s FROM procrastinate_jobs") == [{"s": "failed"}]
    # Someone retries the newer failure: the job no longer needs this issue's retry.
    assert cli("--database-url", db_url, "retry", str(newer)).exit_code == 0
    again = cli("--database-url", db_url, "issues", "retry", str(issue), "--yes")
    assert again.exit_code == 0, again.stdout + again.stderr
    assert "already done: 1 failure superseded by a newer failure of its job" in again.stderr


async def test_a_retry_whose_job_failed_again_is_failed_again_after_the_newer_retry(
    cli, db_url: str
) -> None:  # type: ignore[no-untyped-def]
    """README Retry: a retry's outcome is what its retried job did. Failure A was
    retried, the job failed for good again (failure B), B was retried and the job
    succeeded: A's retry failed again, B's succeeded. Learnt by the periodic check
    (even while the job waits) and by a later decision on A; an attempt that
    Procrastinate retried by itself (will_retry) is not "failed again"."""
    from datetime import UTC, datetime

    from _retry_support import bulk_failed_jobs, fail_again

    from jobsys.db.connect import connect
    from jobsys.retry.store import reconcile_outcomes

    def outcomes(failure: int) -> list[str | None]:
        rows = sql(
            db_url,
            "SELECT retry_state->>'outcome' AS o FROM jobsys_failures WHERE job_id ="
            " (SELECT job_id FROM jobsys_failures WHERE id = %s) ORDER BY id",
            (failure,),
        )
        return [r["o"] for r in rows]

    def job_ends(failure: int, status: str = "succeeded") -> None:
        [row] = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (failure,))
        sql(
            db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (row["job_id"],)
        )
        sql(db_url, "SELECT procrastinate_finish_job_v1(%s, %s, false)", (row["job_id"], status))

    async def reconcile() -> int:
        async with connect(db_url) as conn:
            return await reconcile_outcomes(conn, now=datetime.now(UTC), limit=100)

    url = ("--database-url", db_url)
    by_check, by_decision, attempt = bulk_failed_jobs(db_url, 3)
    assert (await acli(cli, *url, "retry", "--all", "--everything", "--yes")).exit_code == 0
    for a in (by_check, by_decision):
        b = fail_again(db_url, a, kind="transient")
        assert (await acli(cli, *url, "retry", str(b))).exit_code == 0  # the job waits
    assert await reconcile() == 2  # A's outcome is known while its job waits
    assert outcomes(by_check) == ["failed_again", "pending"]
    job_ends(by_check)
    assert await reconcile() == 1
    assert outcomes(by_check) == ["failed_again", "succeeded"]

    # Learnt by a decision on A after the job succeeded (the stored pending put back).
    sql(
        db_url,
        'UPDATE jobsys_failures SET retry_state = retry_state || \'{"outcome": "pending"}\''
        " WHERE id = %s",
        (by_decision,),
    )
    job_ends(by_decision)
    code, data = await retry_json(cli, db_url, str(by_decision))
    assert (code, verdict(data)) == (3, "skipped_superseded")
    assert outcomes(by_decision) == ["failed_again", "pending"]

    # A failed attempt that Procrastinate retried itself, then success: it succeeded.
    newer = fail_again(db_url, attempt, kind="transient")
    sql(db_url, "UPDATE jobsys_failures SET will_retry = true WHERE id = %s", (newer,))
    job_ends(attempt)
    assert await reconcile() == 2  # with the decision test's B, which succeeded
    assert outcomes(attempt) == ["succeeded", None]


def test_show_says_what_the_retried_job_does_now(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """newuser L10: a job retried, a second retry refused while it waited, then the job
    succeeded. `jobs show` and `failures show` said "the job is waiting to run" and
    outcome "pending" until the periodic check ran; now they say what the job did
    (nothing written: --json keeps the recorded state until the check records it)."""
    from _retry_support import bulk_failed_jobs, fail_again

    url = ("--database-url", db_url)
    alice = {"JOBSYS_OPERATOR": "alice"}
    failure, chained = bulk_failed_jobs(db_url, 2)
    jobs = {
        r["id"]: r["job_id"]
        for r in sql(
            db_url,
            "SELECT id, job_id FROM jobsys_failures WHERE id = ANY(%s)",
            ([failure, chained],),
        )
    }
    assert cli(*url, "retry", str(failure), str(chained), env=alice).exit_code == 0
    assert cli(*url, "retry", str(failure), env=alice).exit_code == 3  # already retried

    def shown(*args: str) -> str:
        result = cli(*url, *args)
        assert result.exit_code == 0, result.stderr
        return " ".join(result.stdout.split())

    waiting = "; the job is waiting to run"
    for args in (("jobs", "show", str(jobs[failure])), ("failures", "show", str(failure))):
        out = shown(*args)
        assert "skipped_already_retried: already retried by alice (at " in out, out
        assert waiting in out and "retry outcome pending" in out, out
    job = (jobs[failure],)
    sql(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", job)
    sql(db_url, "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", job)
    for args in (("jobs", "show", str(jobs[failure])), ("failures", "show", str(failure))):
        out = shown(*args)
        assert re.search(r"already retried by alice \(at [^)]* UTC\); the job succeeded \(by", out)
        assert "waiting to run" not in out and "retry outcome succeeded" in out, out
    recorded = cli(*url, "failures", "show", str(failure), "--json").json()["retry_state"]
    assert recorded["outcome"] == "pending" and recorded["outcome_at"] is None

    # A chain: the retried job failed again (B), B's retry made it succeed.
    newer = fail_again(db_url, chained, kind="transient")
    assert cli(*url, "retry", str(newer)).exit_code == 0
    job = (jobs[chained],)
    sql(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", job)
    sql(db_url, "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", job)
    assert "retry outcome failed_again" in shown("failures", "show", str(chained))
    assert "retry outcome succeeded" in shown("failures", "show", str(newer))
    assert "retry outcome succeeded" in shown("jobs", "show", str(jobs[chained]))


def test_jobs_retry_prints_the_verdict_line_of_retry_id(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """newuser L14: `jobs retry ID` printed the bulk summary ("1 failure matched ...
    sample of refused"); it names one failure, so it prints `retry ID`'s verdict line."""
    from _retry_support import bulk_failed_jobs

    url = ("--database-url", db_url)
    (failure,) = bulk_failed_jobs(db_url, 1)
    [row] = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (failure,))
    job = row["job_id"]
    line = f"failure {failure} (job {job}): "
    dry = cli(*url, "jobs", "retry", str(job), "--dry-run")
    assert (dry.exit_code, dry.stdout) == (0, f"{line}would be retried\n"), dry.stderr
    done = cli(*url, "jobs", "retry", str(job))
    assert (done.exit_code, done.stdout) == (0, f"{line}retried\n"), done.stderr
    again = cli(*url, "jobs", "retry", str(job))
    assert again.exit_code == 3
    assert again.stdout.startswith(f"{line}skipped_already_retried: already retried by")
    assert "matched" not in again.stdout + again.stderr
    assert again.stdout == cli(*url, "retry", str(failure)).stdout  # as `retry ID` says


def test_already_retried_names_who_retried_not_who_was_refused(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """fixretry's find: alice retries, bob is refused (already retried), and carol was
    then told "already retried by bob", the actor of the last decision. The verdict
    and the bulk summary name the retrier and when (``retry_state.retried_by`` and
    ``retried_at``), however many refusals followed."""
    from _retry_support import bulk_failed_jobs

    url = ("--database-url", db_url)
    (failure,) = bulk_failed_jobs(db_url, 1)
    assert cli(*url, "retry", str(failure), env={"JOBSYS_OPERATOR": "alice"}).exit_code == 0
    bob = cli(*url, "retry", str(failure), env={"JOBSYS_OPERATOR": "bob"})
    assert bob.exit_code == 3 and "already retried by alice (at " in bob.stdout, bob.stdout
    state = cli(*url, "failures", "show", str(failure), "--json").json()["retry_state"]
    assert (state["actor"], state["retried_by"]) == ("bob", "alice")
    when = state["retried_at"][:19].replace("T", " ")  # 2026-12-05 21:13:00
    carol = {"JOBSYS_OPERATOR": "carol"}
    told = cli(*url, "retry", str(failure), env=carol)
    assert told.exit_code == 3
    assert f"already retried by alice (at {when} UTC); the job is waiting to run" in told.stdout
    assert "bob" not in told.stdout, told.stdout
    bulk = cli(*url, "retry", "--all", "--everything", "--yes", env=carol)
    assert bulk.exit_code == 0, bulk.stderr
    assert "already done: 1 failure was already retried (by alice);" in bulk.stderr, bulk.stderr
    shown = " ".join(cli(*url, "failures", "show", str(failure)).stdout.split())
    assert f"already retried by alice (at {when} UTC); the job is waiting to run (by carol" in shown


def test_show_says_what_a_job_not_failed_then_is_now(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """A refusal because the job was not failed ("the job is todo, not failed") read so
    forever in `failures show` / `jobs show`, after the job succeeded or failed again.
    Shown, it says what the job is now, like the already-retried words (rules.state_now);
    --json keeps the words as decided."""
    from _retry_support import bulk_failed_jobs

    url = ("--database-url", db_url)
    (failure,) = bulk_failed_jobs(db_url, 1)
    [row] = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (failure,))
    job = (row["job_id"],)
    # Run again outside jobsys (Procrastinate's own retry): the job waits, not failed.
    sql(db_url, "SELECT procrastinate_retry_job_v2(%s, now(), 0, 'default', NULL)", job)
    refused = cli(*url, "retry", str(failure))
    assert refused.exit_code == 3
    assert "skipped_not_failed: the job is todo, not failed" in refused.stdout, refused.stdout

    def shown(*args: str) -> str:
        result = cli(*url, *args)
        assert result.exit_code == 0, result.stderr
        return " ".join(result.stdout.split())

    for args in (("jobs", "show", str(job[0])), ("failures", "show", str(failure))):
        assert "skipped_not_failed: the job is todo, not failed (by" in shown(*args)
    sql(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", job)
    sql(db_url, "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", job)
    for args in (("jobs", "show", str(job[0])), ("failures", "show", str(failure))):
        out = shown(*args)
        assert "skipped_not_failed: the job is succeeded, not failed (by" in out, out
        assert "todo" not in out.split("skipped_not_failed")[1].split("(by")[0], out
    recorded = cli(*url, "failures", "show", str(failure), "--json").json()["retry_state"]
    assert recorded["last_detail"] == "the job is todo, not failed"
