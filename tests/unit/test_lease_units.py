"""The lease's numbers, and how background services live through a database outage:
pure logic, no database."""

from __future__ import annotations

import asyncio
import gc
import logging
import sys
from typing import Any

import psycopg
import pytest
from pydantic import ValidationError

from jobsys.config.models import WorkerSettings
from jobsys.errors import DatabaseUnavailable
from jobsys.lanes.heartbeat import Lease
from jobsys.lanes.logs import QuietRoutineJobs
from jobsys.lanes.supervisor import Backoff, ServiceLost, database_away, supervise


def test_default_lease_leaves_margin_for_one_beat_and_drift() -> None:
    settings = WorkerSettings()
    lease = Lease(settings.dead_after_seconds, settings.heartbeat_interval_seconds, sent_at=100.0)
    assert (settings.heartbeat_interval_seconds, settings.dead_after_seconds) == (2.0, 30.0)
    assert lease.margin_seconds == pytest.approx(2.6)  # one beat + 2 % of 30 s
    assert lease.expires_at == pytest.approx(127.4)
    # Ridden out for sure: an outage starting just before a beat was due, plus one retry.
    assert lease.length_seconds - settings.heartbeat_interval_seconds - 0.5 > 20


def test_lease_counts_from_the_latest_beat_sent() -> None:
    lease = Lease(6.0, 1.0, sent_at=0.0)
    assert lease.margin_seconds == pytest.approx(1.25)  # the 0.25 s drift floor
    lease.renewed(3.0)
    lease.renewed(2.0)  # an older beat answered late never moves the lease back
    assert lease.remaining(3.0) == pytest.approx(4.75)


def test_dead_after_must_leave_the_lease_more_than_one_beat() -> None:
    with pytest.raises(ValidationError, match="at least 3 x heartbeat_interval_seconds"):
        WorkerSettings(heartbeat_interval_seconds=5, dead_after_seconds=12)


def test_database_away_is_a_connection_failure_not_a_failed_query() -> None:
    assert database_away(psycopg.OperationalError("connection refused"))
    assert database_away(DatabaseUnavailable("cannot connect"))
    assert database_away(psycopg.errors.AdminShutdown("terminating connection"))
    assert not database_away(psycopg.errors.QueryCanceled("statement timeout"))
    assert not database_away(ValueError("bug"))
    try:
        try:
            raise psycopg.OperationalError("server closed the connection")
        except psycopg.OperationalError as inner:
            raise RuntimeError("service pass failed") from inner
    except RuntimeError as outer:
        assert database_away(outer)


class Flaky:
    name = "flaky"

    def __init__(self, errors: list[BaseException]) -> None:
        self.errors = errors
        self.runs = 0

    async def run(self, app: Any, stop: asyncio.Event) -> None:
        self.runs += 1
        if self.errors:
            raise self.errors.pop(0)


FAST = Backoff(first_seconds=0.001, max_seconds=0.002, max_failures=5)


async def test_a_database_outage_does_not_use_up_a_services_failures() -> None:
    service = Flaky([psycopg.OperationalError("connection refused") for _ in range(12)])
    await supervise(service, None, asyncio.Event(), FAST)
    assert service.runs == 13  # rode out 12 failed connections, then ran


async def test_a_service_that_keeps_failing_is_given_up() -> None:
    service = Flaky([ValueError("bug") for _ in range(12)])
    with pytest.raises(ServiceLost):
        await supervise(service, None, asyncio.Event(), FAST)
    assert service.runs == 5


def test_service_failed_log_has_no_traceback_without_debug() -> None:
    try:
        raise ValueError("relation demo_accounts does not exist")
    except ValueError:
        exc_info = sys.exc_info()
    for action in ("service_failed", "service_lost"):
        record = logging.LogRecord("jobsys", logging.ERROR, __file__, 1, "x", None, exc_info)
        record.action = action
        assert QuietRoutineJobs(debug=False).filter(record)
        assert record.exc_info is None and record.exc_text is None
        debug_record = logging.LogRecord("jobsys", logging.ERROR, __file__, 1, "x", None, exc_info)
        debug_record.action = action
        assert QuietRoutineJobs(debug=True).filter(debug_record)
        assert debug_record.exc_info is exc_info


async def test_a_service_lost_while_stopping_is_retrieved() -> None:
    """No "Task exception was never retrieved" when the supervisor gives up while the
    worker is already stopping."""
    from jobsys.config import load as load_config_files
    from jobsys.lanes.runtime import Runtime

    seen: list[str] = []
    loop = asyncio.get_running_loop()
    loop.set_exception_handler(lambda _loop, context: seen.append(str(context.get("message"))))
    runtime = Runtime(load_config_files(_config_dir()), "postgresql://x@127.0.0.1:1/x", [])
    runtime.request_stop("test")

    async def lost() -> None:
        raise ServiceLost("scheduler", 5, ValueError("x"))

    task = asyncio.create_task(lost())
    await asyncio.sleep(0)
    assert task.done()
    runtime._background_done(task, name="service scheduler")
    del task
    gc.collect()
    await asyncio.sleep(0)
    assert not [m for m in seen if "never retrieved" in m], seen


def _config_dir() -> Any:
    from pathlib import Path

    return Path(__file__).resolve().parents[2] / "config"
