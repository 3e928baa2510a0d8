"""Pure parts of the runtime: timeouts, argument checks, log redaction, identity."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from datetime import timedelta

import pytest

from jobsys.errors import JobTimeoutError, UsageError
from jobsys.failures.redaction import Redactor
from jobsys.jobs import validate
from jobsys.lanes import execution, logs
from jobsys.lanes.identity import ProcessIdentity
from jobsys.lanes.lifecycle import Snapshot
from jobsys.tasks import TaskSpec


async def test_async_timeout_raises_job_timeout_error() -> None:
    async def slow() -> None:
        await asyncio.sleep(5)

    run = execution.runnable(
        TaskSpec(name="t.slow", func=slow, queue="q", timeout_seconds=0.05), None
    )
    with pytest.raises(JobTimeoutError, match=r"t\.slow ran past its timeout of 0\.05 s"):
        await run()


async def test_a_tasks_own_timeout_error_is_not_ours() -> None:
    async def own() -> None:
        raise TimeoutError("upstream timed out")

    run = execution.runnable(TaskSpec(name="t.own", func=own, queue="q", timeout_seconds=5), None)
    with pytest.raises(TimeoutError, match="upstream timed out") as info:
        await run()
    assert not isinstance(info.value, JobTimeoutError)


def test_sync_tasks_are_registered_unwrapped() -> None:
    def f() -> None: ...

    assert execution.runnable(TaskSpec(name="t.f", func=f, queue="q", timeout_seconds=1), None) is f


def defer_delay(text: str) -> timedelta:
    """``jobsys defer --in``: a bare number is seconds, zero is now."""
    from jobsys.timespec import parse_duration

    return parse_duration(text, "--in", unit_required=False, allow_zero=True)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("30", 30),
        ("30s", 30),
        ("10m", 600),
        ("2h", 7200),
        ("1.5d", 129600),
        ("500ms", 0.5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert defer_delay(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10 parsecs", "-5m", "m"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(UsageError):
        defer_delay(text)


def test_args_size_limit_counts_utf8_bytes() -> None:
    # {"a": "éééééééééé"}: 9 ASCII bytes plus 10 two-byte characters.
    assert validate.check_args({"a": "é" * 10}, max_bytes=100) == 29
    with pytest.raises(UsageError, match="args: 29 bytes of JSON, more than the limit of 28"):
        validate.check_args({"a": "é" * 10}, max_bytes=28)


def test_log_lines_never_carry_secrets_or_whole_args() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    handler.addFilter(logs.RedactJobArgs(Redactor()))
    logger = logging.getLogger("test.redaction")
    logger.addHandler(handler)
    logger.propagate = False
    job = {
        "id": 7,
        "task_name": "demo.login",
        "queue": "profiles",
        "task_kwargs": {"account_id": 1, "password": "hunter2-canary", "blob": "x" * 5000},
    }
    job["call_string"] = (
        f"demo.login[7](account_id=1, password='hunter2-canary', blob='{'x' * 5000}')"
    )
    try:
        raise ValueError("login failed with hunter2-canary")
    except ValueError:
        logger.error(
            f"Job {job['call_string']} ended with status: Error",
            extra={"action": "job_error", "job": job},
            exc_info=True,
        )
    line = stream.getvalue().strip()
    assert "\n" not in line
    record = json.loads(line)
    assert "hunter2-canary" not in line
    assert record["action"] == "job_error"
    assert "password='[REDACTED]'" in record["message"]
    assert len(record["message"]) < 400
    assert "ValueError: login failed with [REDACTED]" in record["traceback"]


def test_process_ids_are_unique_per_process_start() -> None:
    a, b = ProcessIdentity.current(), ProcessIdentity.current()
    assert a.id != b.id
    host, pid, started, nonce = a.id.split(":")
    assert (host, int(pid)) == (a.hostname, a.pid) and started.endswith("Z") and len(nonce) == 6


def test_status_line() -> None:
    snap = Snapshot("p", ("base", "ai"), "running", {"base": 3}, {"base": 12, "ai": 0}, 40, True)
    assert (
        snap.status_line()
        == "running; base: 3 running, 12 waiting; ai: 0 running, 0 waiting; 40 done"
    )


def test_failed_job_log_line_keeps_one_line_not_the_traceback() -> None:
    import logging
    import sys

    from jobsys.lanes.logs import QuietRoutineJobs

    try:
        raise KeyError("edge_followed_by")
    except KeyError:
        exc_info = sys.exc_info()
    record = logging.LogRecord(
        "procrastinate.worker",
        logging.ERROR,
        __file__,
        1,
        "Job %s ended with status: Error",
        ("demo.refresh_profile[7](account_id=7)",),
        exc_info,
    )
    record.action = "job_error"
    assert QuietRoutineJobs(debug=False).filter(record)
    assert record.exc_info is None
    assert record.getMessage() == (
        "Job demo.refresh_profile[7](account_id=7) ended with status: Error - KeyError: "
        "'edge_followed_by' (traceback: `jobsys failures list`)"
    )
    debug_record = logging.LogRecord(
        "procrastinate.worker", logging.ERROR, __file__, 1, "x", None, exc_info
    )
    debug_record.action = "job_error"
    assert QuietRoutineJobs(debug=True).filter(debug_record)
    assert debug_record.exc_info is exc_info  # --debug keeps the traceback
