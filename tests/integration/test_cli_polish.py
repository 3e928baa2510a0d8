"""What a new operator tripped over: piped tables, dry-run wording, prompts on stderr,
"already done" bulk retries, ``schedule run`` on stdout, ``failures show`` naming its
issue and verdict, and non-PostgreSQL URLs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from _retry_support import bulk_failed_jobs, fail_again, make_issue, sql

HERE = Path(__file__).resolve().parent
JOBSYS = str(Path(sys.executable).with_name("jobsys"))


def piped(db_url: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real binary with stdout and stderr piped, no COLUMNS: `jobsys ... | cat`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.pop("COLUMNS", None)
    env.update(
        JOBSYS_DATABASE_URL=db_url,
        JOBSYS_CONFIG_DIR=str(HERE.parents[1] / "config"),
        JOBSYS_HOME=str(tmp_path / "home"),
    )
    return subprocess.run(
        [JOBSYS, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )


def test_piped_tables_are_not_squeezed_to_80_columns(db_url: str, tmp_path: Path) -> None:
    queues = piped(db_url, tmp_path, "queues")
    assert queues.returncode == 0, queues.stderr
    header = next(line for line in queues.stdout.splitlines() if "queue" in line)
    for word in ("concurrency", "waiting", "scheduled", "running"):
        assert word in header, header  # whole words, on one header line
    assert "engagements" in queues.stdout and "video_processing_queue" in queues.stdout
    assert not any(line.rstrip().endswith(("concurr", "engagem")) for line in queues.stdout)

    status = piped(db_url, tmp_path, "db", "status")
    assert status.returncode == 0, status.stderr
    url_line = next(line for line in status.stdout.splitlines() if line.startswith("url"))
    assert url_line.split()[-1] == db_url  # the whole URL on its line (no password here)


def test_every_list_with_a_limit_takes_n_as_jobs_list_does(cli: Any, db_url: str) -> None:
    """An operator who learnt `jobs list -n 5` types the same on the other lists."""
    issue = make_issue(db_url)
    make_issue(db_url)
    bulk_failed_jobs(db_url, 3, issue_id=issue)
    for command, expected in ((("failures", "list"), 1), (("issues", "list"), 1),
                              (("jobs", "list"), 1), (("pipelines", "list"), 0),
                              (("fanout", "list"), 0)):  # fmt: skip
        result = cli("--database-url", db_url, *command, "-n", "1", "--json")
        assert result.exit_code == 0, (command, result.stderr)
        assert result.json()["count"] == expected, command


def test_per_id_dry_run_says_it_is_one(cli: Any, db_url: str) -> None:
    [failure] = bulk_failed_jobs(db_url, 1)
    [auth] = bulk_failed_jobs(db_url, 1, kind="authentication")
    result = cli("--database-url", db_url, "retry", str(failure), str(auth), "--dry-run")
    assert result.exit_code == 0, result.stderr
    job = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (failure,))[0]["job_id"]
    lines = result.stdout.splitlines()
    assert lines[0] == f"failure {failure} (job {job}): would be retried"
    assert "would be refused, skipped_authentication: " in lines[1]
    assert "dry run: 1 would be retried, 1 would be refused; nothing was changed" in result.stderr
    assert " retried, " not in result.stderr.replace("would be retried, ", "")
    assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]
    data = cli("--database-url", db_url, "retry", str(failure), "--dry-run", "--json").json()
    assert data["dry_run"] is True and data["results"][0]["decision"] == "would_retry"


def test_bulk_prompt_on_stderr_and_a_rerun_is_already_done(cli: Any, db_url: str) -> None:
    issue = make_issue(db_url)
    bulk_failed_jobs(db_url, 6, issue_id=issue)
    args = ("--database-url", db_url, "retry", "--all", "--issue", str(issue))
    declined = cli(*args, input="n\n")
    assert declined.exit_code == 2
    assert "Retry 6 of 6 failures?" in declined.stderr
    assert declined.stdout == ""  # stdout stays clean for data
    first = cli(*args, input="y\n", env={"JOBSYS_OPERATOR": "alice"})
    assert first.exit_code == 0, first.stderr
    assert "Retry 6 of 6 failures?" in first.stderr and "Retry" not in first.stdout

    # The colleague, a second later, same command: no question, told it is done, exit 0.
    again = cli(*args, env={"JOBSYS_OPERATOR": "bob"})
    assert again.exit_code == 0, again.stderr
    assert "Retry 0" not in again.stderr
    assert "already done: 6 failures were already retried (by alice)" in again.stderr
    assert "skipped_already_retried" in again.stdout
    as_json = cli(*args, "--yes", "--json")
    assert as_json.exit_code == 0
    assert as_json.json()["counts"] == {"skipped_already_retried": 6}

    # Anything refused for another reason still means "partly done".
    bulk_failed_jobs(db_url, 1, kind="authentication", issue_id=issue)
    mixed = cli(*args, "--yes")
    assert mixed.exit_code == 3
    assert "already done" not in mixed.stderr

    # Failures named by id keep their per-failure verdicts and exit 3.
    failure_id = sql(db_url, "SELECT min(id) AS id FROM jobsys_failures")[0]["id"]
    by_id = cli("--database-url", db_url, "retry", str(failure_id))
    assert by_id.exit_code == 3
    assert "skipped_already_retried: already retried by" in by_id.stdout


def test_bulk_rerun_after_a_partial_run_exits_0(cli: Any, db_url: str) -> None:
    issue = make_issue(db_url)
    ids = bulk_failed_jobs(db_url, 4, issue_id=issue)
    assert cli("--database-url", db_url, "retry", *map(str, ids[:2])).exit_code == 0
    rerun = cli("--database-url", db_url, "retry", "--all", "--issue", str(issue), "--yes")
    assert rerun.exit_code == 0, rerun.stderr
    assert "2 retried now; 2 failures were already retried (by " in rerun.stderr


def test_schedule_run_prints_the_id_on_stdout(cli: Any, db_url: str) -> None:
    result = cli("--database-url", db_url, "schedule", "run", "purge_expired_post_media")
    assert result.exit_code == 0, result.stderr
    job_id = int(result.stdout.strip())
    assert sql(db_url, "SELECT task_name FROM procrastinate_jobs WHERE id = %s", (job_id,))
    assert f"job {job_id} enqueued on" in result.stderr

    assert cli("--database-url", db_url, "demo", "seed", "--accounts", "3").exit_code == 0
    fanout = cli("--database-url", db_url, "schedule", "run", "profile_refresh")
    assert fanout.exit_code == 0, fanout.stderr
    run_id = int(fanout.stdout.strip())
    assert f"fanout show {run_id}" in fanout.stderr
    assert sql(db_url, "SELECT entry FROM jobsys_fanout_runs WHERE id = %s", (run_id,)) == [
        {"entry": "profile_refresh"}
    ]


def test_failures_show_names_the_issue_and_the_retry_verdict(cli: Any, db_url: str) -> None:
    issue = make_issue(db_url)
    [failure] = bulk_failed_jobs(db_url, 1, issue_id=issue)
    [lonely] = bulk_failed_jobs(db_url, 1)
    url = ("--database-url", db_url)

    data = cli(*url, "failures", "show", str(failure), "--json").json()
    assert data["issue_id"] == issue
    assert data["issue"] == {"id": issue, "title": "test issue", "status": "open"}
    assert cli(*url, "failures", "show", str(lonely), "--json").json()["issue"] is None

    text = cli(*url, "failures", "show", str(failure))
    assert text.exit_code == 0, text.stderr
    assert f"{issue} (open): test issue" in text.stdout
    assert "no retry decision yet" in text.stdout

    operator = {"JOBSYS_OPERATOR": "tester"}
    assert cli(*url, "retry", str(failure), env=operator).exit_code == 0
    assert cli(*url, "retry", str(failure)).exit_code == 3  # refused: already retried
    text = cli(*url, "failures", "show", str(failure))
    verdict = next(line for line in text.stdout.splitlines() if line.startswith("retry "))
    assert "skipped_already_retried: already retried by tester" in verdict, verdict
    assert "retry outcome" in text.stdout and "pending" in text.stdout
    assert '"last_decision"' not in text.stdout  # a verdict, not a JSON blob
    data = cli(*url, "failures", "show", str(failure), "--json").json()
    assert data["retry_state"]["last_decision"] == "skipped_already_retried"


def verdict(cli: Any, *command: str) -> tuple[dict[str, Any], str]:
    """A show command's --json, and its text's one 'would retry' line, spaces squeezed."""
    data = cli(*command, "--json").json()
    text = cli(*command)
    assert text.exit_code == 0, text.stderr
    lines = [x for x in text.stdout.splitlines() if x.startswith("would retry")]
    assert len(lines) == 1, text.stdout  # one verdict
    return data, " ".join(lines[0].split())


def test_failures_show_says_whether_retry_would_retry_it_and_why_not(cli: Any, db_url: str) -> None:
    """`failures show` (and --json) tell what `jobsys retry ID` would do, as the web
    console's failure page does (rules.refusal_known): each refusal is the one the
    retry's own dry run gives."""
    url = ("--database-url", db_url)
    runtime, succeeded, retried, older = bulk_failed_jobs(db_url, 4)
    [auth] = bulk_failed_jobs(db_url, 1, kind="authentication")
    job = sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (succeeded,))[0]
    sql(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job["job_id"],))
    sql(db_url, "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (job["job_id"],))
    assert cli(*url, "retry", str(retried), env={"JOBSYS_OPERATOR": "alice"}).exit_code == 0
    assert cli(*url, "retry", str(older)).exit_code == 0
    newer = fail_again(db_url, older, kind="transient")

    def shown(failure: int) -> tuple[dict[str, Any], str]:
        return verdict(cli, *url, "failures", "show", str(failure))

    for failure in (runtime, newer):
        data, line = shown(failure)
        assert (data["would_retry"], data["retry_refusal"]) == (True, None)
        assert line == (
            f"would retry yes, as far as the failure and its job tell"
            f" (`jobsys retry {failure} --dry-run` checks the rest)"
        )
        dry = cli(*url, "retry", str(failure), "--dry-run", "--json").json()
        assert dry["results"][0]["decision"] == "would_retry"
    for failure, decision, why in (
        (auth, "skipped_authentication", "authentication failure: retrying would burn"),
        (succeeded, "skipped_not_failed", "the job is succeeded, not failed"),
        (retried, "skipped_already_retried", "already retried by alice"),
        (older, "skipped_superseded", f"the job failed again since (failure {newer},"),
    ):
        data, line = shown(failure)
        assert data["would_retry"] is False
        assert data["retry_refusal"]["decision"] == decision, data["retry_refusal"]
        assert why in data["retry_refusal"]["detail"]
        assert line.startswith(f"would retry no: {decision}: {why}"), line
        dry = cli(*url, "retry", str(failure), "--dry-run", "--json").json()
        [said] = dry["results"]
        assert (said["decision"], said["detail"]) == (decision, data["retry_refusal"]["detail"])


def test_a_url_that_is_not_postgres_is_a_usage_error(cli: Any) -> None:
    for args in (("db", "status"), ("queues",), ("failures", "list")):
        result = cli("--database-url", "mysql://u:pw@h/x", *args)
        assert result.exit_code == 2, (args, result.stderr)
        assert "mysql://u:***@h/x is a mysql:// URL, not a PostgreSQL one" in result.stderr
        assert "postgresql://USER" in result.stderr
        assert ":pw@" not in result.stderr and "Traceback" not in result.stderr
    env = cli("queues", env={"JOBSYS_DATABASE_URL": "localhost"})
    assert env.exit_code == 2 and "JOBSYS_DATABASE_URL" in env.stderr


def test_an_empty_workers_state_filter_does_not_say_to_start_one(cli: Any, db_url: str) -> None:
    """`workers list --state dead` with none dead said 'no worker processes (start one with
    `jobsys worker`)', while a worker ran (operator walk-through): it names the state."""
    url = ("--database-url", db_url)
    dead = cli(*url, "workers", "list", "--state", "dead")
    assert (dead.exit_code, dead.stdout) == (0, "")
    assert dead.stderr.strip() == (
        "no dead worker process among those live or ended in the last day (--all: every one)"
    )
    both = cli(*url, "workers", "--all", "--state", "dead", "--state", "fenced")
    assert both.stderr.strip() == "no dead or fenced worker process"
    plain = cli(*url, "workers", "list")
    assert plain.stderr.strip() == "no worker processes (start one with `jobsys worker`)"


def test_a_dry_run_progress_bar_does_not_say_retrying(
    cli: Any, db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`retry --all --issue 1 --dry-run` on a terminal drew 'retrying ━━━ 13/13' while
    it retried nothing (operator walk-through, story 5): a long preview read as the real
    thing. A dry run's bar says 'checking'."""
    import contextlib
    from collections.abc import Iterator

    from jobsys.cli import _output

    seen: list[str] = []

    @contextlib.contextmanager
    def bar(description: str) -> Iterator[Any]:
        seen.append(description)
        yield lambda done, total: None

    monkeypatch.setattr(_output, "progress_bar", bar)
    url = ("--database-url", db_url)
    cli(*url, "retry", "--all", "--everything", "--dry-run")
    cli(*url, "retry", "--all", "--everything", "--yes")
    assert seen == ["checking", "retrying"]


@pytest.mark.parametrize(
    "args",
    [
        ("jobs", "list", "--queue", "nosuchq"),
        ("jobs", "cancel", "--all", "--queue", "nosuchq", "--dry-run"),
        ("queues", "purge", "nosuchq", "--dry-run"),
    ],
)
def test_an_unknown_queue_filter_says_where_queues_are(
    cli: Any, db_url: str, args: tuple[str, ...]
) -> None:
    """`jobs list --queue nosuchq` and `queues purge nosuchq` said only "unknown queue
    'nosuchq'" (no close name to suggest), where `defer --queue` names where queues are
    declared and the command that lists them (operator walk-through)."""
    result = cli("--database-url", db_url, *args)
    assert (result.exit_code, result.stdout) == (2, "")
    assert result.stderr.splitlines() == [
        "error: unknown queue 'nosuchq'",
        "Queues are declared in config/queues.yaml (`jobsys queues` lists them).",
    ]


def test_a_misspelt_fanout_entry_gets_a_note(cli: Any, db_url: str) -> None:
    """`fanout list --entry continuous_acount_processing` said only 'no fan-out runs', as
    if the entry had never run (operator walk-through, story 7): a name that is no
    fan-out entry gets a note on stderr and in the JSON's notes, as `failures list
    --queue` does; the listing still runs (an entry removed from the file keeps its runs)."""
    url = ("--database-url", db_url)
    typo = cli(*url, "fanout", "list", "--entry", "continuous_acount_processing")
    assert (typo.exit_code, typo.stdout) == (0, "")
    assert typo.stderr.startswith(
        "note: --entry 'continuous_acount_processing' is not a fan-out entry of schedule.yaml "
        "(did you mean 'continuous_account_processing'"
    ), typo.stderr
    assert typo.stderr.rstrip().endswith("no fan-out runs")
    data = cli(*url, "fanout", "list", "--entry", "retention", "--json").json()
    assert data["items"] == [] and len(data["notes"]) == 1
    assert "'retention' is not a fan-out entry" in data["notes"][0]
    right = cli(*url, "fanout", "list", "--entry", "continuous_account_processing", "--json")
    assert right.json()["notes"] == [] and "note:" not in right.stderr


def test_jobs_show_says_whether_its_latest_failure_would_be_retried(cli: Any, db_url: str) -> None:
    """`jobs show` (and --json) tell what `jobsys jobs retry ID` would do with the job's
    latest failure, as `failures show` and the web console's job page do
    (rules.refusal_known): each refusal is the one the retry's own dry run gives."""
    url = ("--database-url", db_url)
    runtime, succeeded, older = bulk_failed_jobs(db_url, 3)
    [auth] = bulk_failed_jobs(db_url, 1, kind="authentication")
    job = {f: sql(db_url, "SELECT job_id FROM jobsys_failures WHERE id = %s", (f,))[0]["job_id"]
           for f in (runtime, succeeded, older, auth)}  # fmt: skip
    sql(db_url, "UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job[succeeded],))
    sql(db_url, "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (job[succeeded],))
    assert cli(*url, "retry", str(older)).exit_code == 0
    newer = fail_again(db_url, older, kind="transient")

    def shown(job_id: int) -> tuple[dict[str, Any], str]:
        return verdict(cli, *url, "jobs", "show", str(job_id))

    for failure in (runtime, newer):
        data, line = shown(job[older if failure == newer else failure])
        assert (data["would_retry"], data["retry_refusal"]) == (True, None)
        job_id = data["id"]
        assert line == (
            f"would retry yes, as far as its latest failure ({failure}) and the job tell"
            f" (`jobsys jobs retry {job_id} --dry-run` checks the rest)"
        )
        dry = cli(*url, "jobs", "retry", str(job_id), "--dry-run", "--json").json()
        assert [r["decision"] for r in dry["results"]] == ["would_retry"]
    for failure, decision, why in (
        (auth, "skipped_authentication", "authentication failure: retrying would burn"),
        (succeeded, "skipped_not_failed", "the job is succeeded, not failed"),
    ):
        data, line = shown(job[failure])
        assert data["would_retry"] is False
        assert data["retry_refusal"]["decision"] == decision, data["retry_refusal"]
        assert why in data["retry_refusal"]["detail"]
        assert line.startswith(f"would retry no: {decision}: {why}"), line
        dry = cli(*url, "jobs", "retry", str(job[failure]), "--dry-run", "--json").json()
        [said] = dry["results"]
        assert (said["decision"], said["detail"]) == (decision, data["retry_refusal"]["detail"])

    [plain] = sql(
        db_url,
        "SELECT id FROM unnest(procrastinate_defer_jobs_v1(ARRAY[ROW('default', 't_retry.work',"
        " 0, NULL, NULL, '{}'::jsonb, NULL)::procrastinate_job_to_defer_v1])) id",
    )
    data = cli(*url, "jobs", "show", str(plain["id"]), "--json").json()
    assert (data["would_retry"], data["retry_refusal"]) == (None, None)  # no failure
    assert "would retry" not in cli(*url, "jobs", "show", str(plain["id"])).stdout
