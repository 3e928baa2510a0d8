"""The real ``jobsys`` whose stdout reader goes away (``| head``, ``less`` quit): the
rule of ``jobsys/cli/_pipe.py`` (README, "Exit codes"). A command that only shows
stops quietly with 141; a committed change keeps its own exit status and says on
stderr that its report was cut; ``jobsys events`` stops without waiting for an event.
A broken stderr stops nothing, and a worker or the web console never stops because
the reader of its logs went away.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from _retry_support import bulk_failed_jobs, make_issue, sql

from jobsys.cli._pipe import CUT_BUT_COMPLETED, EXIT_OUTPUT_CUT

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
JOBSYS = str(Path(sys.executable).with_name("jobsys"))
#: Rows of output: far more than a pipe holds (64 KiB), so writing blocks on the reader.
ROWS = 3000


def env_of(db_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of an operator's ``jobsys`` that knows the test tasks. Without
    PYTHONUNBUFFERED: an operator's stdout is buffered (unbuffered, Python drops what a
    write to a closing pipe could not pass, without an error)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.pop("PYTHONUNBUFFERED", None)
    env.update(
        JOBSYS_DATABASE_URL=db_url,
        JOBSYS_CONFIG_DIR=str(REPO / "config"),
        JOBSYS_HOME=str(tmp_path / "home"),
        JOBSYS_APP="jobsys.demo.tasks,_retry_support",
        PYTHONPATH=os.pathsep.join([str(REPO), str(HERE)]),
    )
    return env


def read_a_little_then_close(env: dict[str, str], *argv: str) -> tuple[int, str]:
    """``jobsys ARGV | head -c 100``: read 100 bytes, close, then the exit status and
    stderr."""
    proc = subprocess.Popen(
        [JOBSYS, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert len(proc.stdout.read(100)) == 100
        proc.stdout.close()
        err = proc.stderr.read()
        return proc.wait(timeout=60), err
    finally:
        proc.kill()
        proc.wait()


def into_a_closed_pipe(
    env: dict[str, str], *argv: str, with_stderr: bool = False
) -> subprocess.CompletedProcess[str]:
    """``jobsys ARGV`` whose stdout (``with_stderr``: and stderr, ``2>&1``) is a pipe
    nobody reads any more (``| true``, a ``less`` quit before the output came),
    deterministically: every write fails."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        return subprocess.run(
            [JOBSYS, *argv],
            env=env,
            stdout=write_end,
            stderr=write_end if with_stderr else subprocess.PIPE,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)


@pytest.mark.parametrize(
    "argv",
    [
        ("jobs", "list", "-n", str(ROWS)),
        ("jobs", "list", "-n", str(ROWS), "--json"),
        ("failures", "list", "-n", str(ROWS), "--json"),
    ],
    ids=["jobs-table", "jobs-json", "failures-json"],
)
def test_a_listing_cut_by_head_exits_141_in_silence(
    db_url: str, tmp_path: Path, argv: tuple[str, ...]
) -> None:
    bulk_failed_jobs(db_url, ROWS)
    status, err = read_a_little_then_close(env_of(db_url, tmp_path), *argv)
    # Before: exit 1 (Click's EPIPE handling), nothing said.
    assert (status, err) == (EXIT_OUTPUT_CUT, "")


def test_a_reader_gone_before_the_output_came_exits_141_in_silence(
    db_url: str, tmp_path: Path
) -> None:
    """A small output sits in stdout's buffer until the end: the pipe breaks there, and
    before it broke again at interpreter shutdown ("Exception ignored ...", exit 120)."""
    env = env_of(db_url, tmp_path)
    for argv in (("queues",), ("queues", "--json"), ("db", "status")):
        done = into_a_closed_pipe(env, *argv)
        assert (done.returncode, done.stderr) == (EXIT_OUTPUT_CUT, ""), argv
    # `2>&1 | head`: stdout into the closed pipe still stops a read (before: 120)...
    assert into_a_closed_pipe(env, "queues", with_stderr=True).returncode == 141
    # ...but a broken stderr alone stops nothing: `failures list` has only a message
    # to say ("no failures"), on stderr, and ends as it would (0).
    assert into_a_closed_pipe(env, "failures", "list", with_stderr=True).returncode == 0


def test_a_committed_retry_whose_report_is_cut_keeps_its_exit_status(
    db_url: str, tmp_path: Path
) -> None:
    """`jobsys retry --all --yes --json | head`: the retry committed, so it is not
    reported as failed (141): its own status (3: the authentication failures were
    refused), and stderr says the output was cut after the change."""
    issue = make_issue(db_url)
    ids = bulk_failed_jobs(db_url, ROWS, issue_id=issue)
    bulk_failed_jobs(db_url, 2, kind="authentication", issue_id=issue)
    env = env_of(db_url, tmp_path)
    done = into_a_closed_pipe(env, "retry", "--all", "--issue", str(issue), "--yes", "--json")
    retried = sql(db_url, "SELECT failure_id FROM jobsys_retry_events WHERE decision = 'retried'")
    assert sorted(r["failure_id"] for r in retried) == sorted(ids)
    # Before: exit 1 and nothing on stderr, as if the retry had failed.
    assert done.returncode == 3, done.stderr
    assert done.stderr == CUT_BUT_COMPLETED.format(status=3) + "\n"
    # A listing cut the same way is still 141: only a committed change keeps its status.
    listing = into_a_closed_pipe(env, "failures", "list", "--issue", str(issue), "--json")
    assert (listing.returncode, listing.stderr) == (EXIT_OUTPUT_CUT, "")


def test_events_stops_when_its_reader_goes_away_without_waiting_for_an_event(
    db_url: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        [JOBSYS, "events", "--json"],
        env=env_of(db_url, tmp_path),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        assert proc.stderr.readline().startswith("listening for")
        proc.stdout.close()  # the reader goes away; no event is ever published
        closed = time.monotonic()
        status = proc.wait(timeout=10)  # before: ran until an event came (forever here)
        stopped_after = time.monotonic() - closed
        assert (status, proc.stderr.read()) == (EXIT_OUTPUT_CUT, "")
        assert stopped_after < 2, f"stopped {stopped_after:.1f}s after the reader went away"
    finally:
        proc.kill()
        proc.wait()


def test_unit_files_written_whose_report_is_cut_exit_0(db_url: str, tmp_path: Path) -> None:
    """A change that is not in the database follows the rule too: the files are there."""
    out = tmp_path / "units"
    done = into_a_closed_pipe(
        env_of(db_url, tmp_path), "systemd", "render", "--out", str(out), "--json"
    )
    assert (out / "jobsys.target").exists()
    # Before the note, the render's own warning that the units do not carry the URL
    # given in the environment (a42874d); nothing else.
    *before, note = done.stderr.splitlines()
    assert (done.returncode, note) == (0, CUT_BUT_COMPLETED.format(status=0))
    assert len(before) == 1 and before[0].startswith("warning: the units do not carry"), before


def test_an_unbuffered_listing_cut_by_head_exits_141_too(db_url: str, tmp_path: Path) -> None:
    """PYTHONUNBUFFERED=1 (the rendered systemd units set it): Python's text layer
    drops what a short write to the closing pipe did not pass, without an error;
    the guard writes the rest, which meets the broken pipe (before: exit 0)."""
    bulk_failed_jobs(db_url, ROWS)
    env = env_of(db_url, tmp_path) | {"PYTHONUNBUFFERED": "1"}
    for argv in (("jobs", "list", "-n", str(ROWS), "--json"), ("jobs", "list", "-n", str(ROWS))):
        assert read_a_little_then_close(env, *argv) == (EXIT_OUTPUT_CUT, ""), argv


#: Jobs a worker whose log reader went away must still run.
JOBS = 200


def waiting_jobs(db_url: str, count: int) -> None:
    """``count`` jobs of ``t_retry.work`` (key "ok": it succeeds) waiting in "default"."""
    sql(
        db_url,
        """
        SELECT procrastinate_defer_jobs_v1(array_agg(
            ROW('default', 't_retry.work', 0, NULL, NULL,
                jsonb_build_object('key', 'ok-' || g), NULL)::procrastinate_job_to_defer_v1
        )) FROM generate_series(1, %s) g
        """,
        (count,),
    )


def worker_cut_mid_run(env: dict[str, str], *argv: str) -> int:
    """``jobsys ARGV 2>&1 | grep -m1 t_retry.work``: the reader of the combined output
    goes away once a job's log line came (the jobs are running), then the exit status."""
    proc = subprocess.Popen(
        [JOBSYS, *argv], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            if b"t_retry.work" in line:
                break
        proc.stdout.close()
        return proc.wait(timeout=120)
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("how", ["closed", "closed-debug", "cut-mid-run-debug"])
def test_a_worker_whose_log_reader_went_away_runs_every_job(
    db_url: str, tmp_path: Path, how: str
) -> None:
    """`jobsys worker 2>&1 | head`, a log shipper that died: the next log record met
    the broken pipe and stopped the worker (141 at its first line), or, logged from
    inside a job's run (-v: "Loaded job info"), failed the job without running it and
    without a failure record. Now the logs go to /dev/null and the worker works on."""
    waiting_jobs(db_url, JOBS)
    env = env_of(db_url, tmp_path) | {"PYTHONUNBUFFERED": "1"}  # as the systemd units
    argv = ("-v",) if how.endswith("debug") else ()
    argv += ("worker", "--drain", "-l", "base")
    if how.startswith("cut"):
        status = worker_cut_mid_run(env, *argv)
    else:
        status = into_a_closed_pipe(env, *argv, with_stderr=True).returncode
    statuses = sql(
        db_url,
        "SELECT status, count(*) AS n FROM procrastinate_jobs "
        "WHERE task_name = 't_retry.work' GROUP BY status",
    )
    assert {r["status"]: r["n"] for r in statuses} == {"succeeded": JOBS}
    assert sql(db_url, "SELECT id FROM jobsys_failures") == []
    assert status == 0  # --drain: stopped once empty


#: A port of this test's range (56560-56569) for the console.
WEB_PORT = 56561


def test_the_web_console_whose_log_reader_went_away_still_answers(
    db_url: str, tmp_path: Path
) -> None:
    """`jobsys web 2>&1 | head -c1`: uvicorn's first log line met the broken pipe and
    the console exited (141) before it answered. Its logs (the access log is on
    stdout) now go to /dev/null and it serves."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    url = f"http://127.0.0.1:{WEB_PORT}/admin/background_jobs"
    proc = subprocess.Popen(
        [JOBSYS, "web", "--port", str(WEB_PORT)],
        env=env_of(db_url, tmp_path),
        stdout=write_end,
        stderr=write_end,
    )
    os.close(write_end)
    try:
        answers: list[int] = []
        deadline = time.monotonic() + 30
        while len(answers) < 3 and time.monotonic() < deadline:
            assert proc.poll() is None, f"the console exited with {proc.returncode}"
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    answers.append(response.status)
            except OSError:  # not listening yet
                time.sleep(0.1)
        assert answers == [200, 200, 200]
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_a_cut_report_of_a_command_that_changed_nothing_claims_no_change(
    db_url: str, tmp_path: Path
) -> None:
    """`jobsys schedule resume ENTRY --json | true` for an entry not paused: nothing
    was changed, so the note says the command completed, not that a change is
    committed (before: "what the command changed is committed")."""
    done = into_a_closed_pipe(
        env_of(db_url, tmp_path), "schedule", "resume", "continuous_account_processing", "--json"
    )
    assert (done.returncode, done.stderr) == (0, CUT_BUT_COMPLETED.format(status=0) + "\n")
    assert "committed" not in done.stderr
