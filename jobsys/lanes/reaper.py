"""Crash recovery: the reaper finds jobs left in ``doing`` by dead workers and settles
them, and aborts jobs stuck far past their timeout under live workers.

Procrastinate leaves this to the application (its "retry stalled jobs" how-to).
Shape (River's rescuer): :func:`reap_once` does one pass and returns a
:class:`ReapResult`; :class:`ReaperService` is the thin loop every worker process runs
beside its lanes; the built-in task ``jobsys.reap`` (``jobsys.lanes.reap_task``) runs
the same pass from the schedule, as a backstop.

A worker is dead when its ``procrastinate_workers`` heartbeat is older than
``worker.dead_after_seconds`` by the DATABASE clock, or when its row is gone. For
each of its ``doing`` jobs, in one short transaction that holds the job row
(``FOR UPDATE SKIP LOCKED``, so racing reapers handle each job once):

- abort requested before the worker died, and the job had run past its timeout x
  ``stuck_after_timeout_factor`` (the reaper's own stuck rule asked, or an operator
  asked for the same reason): finished ``failed`` with a failure row of reason
  ``timeout`` (``JobTimeoutError``, transient, retryable: automatic retry may run it
  again), never a silent ``aborted``;
- abort requested otherwise: finished as ``aborted`` (what the operator asked);
- task registered and ``rerun_safe``: requeued through Procrastinate's
  ``retry_job`` (status ``todo``, attempts + 1), a ``worker_lost`` failure row with
  ``will_retry = true`` explains the extra attempt, and a NOTIFY wakes a listening
  worker at once (Procrastinate's retry path sends none); the job is detached from
  the dead worker first, so pruning that worker cannot lock it while the woken
  worker tries to claim it (``jobsys.engine.dead_workers.DETACH_FROM_WORKER``);
- otherwise (unsafe, unknown task, or lost its worker ``max_crash_requeues`` times):
  finished as ``failed`` with a ``worker_lost`` failure row for a human to decide.

A job under a live worker is never requeued. After an outage every heartbeat is
stale: a reaper whose own process has not reached the database for a whole
``dead_after_seconds`` yet (``heartbeat.database_continuity``) judges no one dead, so
live workers beat again first; a worker cut off alone fences itself (exit 75) before
it can be judged dead. Backstop: one running longer than its
timeout x ``worker.stuck_after_timeout_factor`` gets Procrastinate's abort request
(logged as ``job_stuck``). Stale ``jobsys_worker_processes`` rows are marked ``dead``
and stale ``procrastinate_workers`` rows pruned. It logs only when it did something.

Events (``action`` in the log record): ``job_requeued``, ``job_worker_lost``,
``job_aborted_worker_lost``, ``job_stuck``, ``worker_process_dead``,
``reaper_pass``, ``reaper_error``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobsys import tasks as task_registry
from jobsys.db.query import fetch_all, fetch_one
from jobsys.engine import dead_workers as store
from jobsys.engine import pool
from jobsys.failures.redaction import Redactor
from jobsys.failures.store import FailureRow, insert_failure
from jobsys.lanes import execution
from jobsys.lanes.heartbeat import database_continuity
from jobsys.periodic import Periodic

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.engine.api import App

logger = logging.getLogger("jobsys.reaper")

#: Upper bound of jobs settled in one pass, so a pass stays short; the next pass
#: (seconds later) continues.
MAX_JOBS_PER_PASS = 1000
#: Consecutive failed passes after which the service gives up and raises, so the
#: worker's supervisor restarts it (and the process exits non-zero if it cannot).
MAX_CONSECUTIVE_ERRORS = 10
WORKER_LOST_ERROR_CLASS = "jobsys.WorkerLost"
TIMEOUT_ERROR_CLASS = "jobsys.errors.JobTimeoutError"


@dataclass
class ReapResult:
    """What one pass did (job and worker ids)."""

    requeued: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    aborted: list[int] = field(default_factory=list)
    stuck: list[int] = field(default_factory=list)
    #: Stuck jobs whose abort was already requested and that still run.
    still_stuck: list[int] = field(default_factory=list)
    processes_marked_dead: list[str] = field(default_factory=list)
    workers_pruned: list[int] = field(default_factory=list)

    @property
    def did_something(self) -> bool:
        return bool(
            self.requeued
            or self.failed
            or self.aborted
            or self.stuck
            or self.processes_marked_dead
            or self.workers_pruned
        )

    def counts(self) -> dict[str, int]:
        return {
            "requeued": len(self.requeued),
            "failed": len(self.failed),
            "aborted": len(self.aborted),
            "stuck": len(self.stuck),
            "still_stuck": len(self.still_stuck),
            "processes_marked_dead": len(self.processes_marked_dead),
            "workers_pruned": len(self.workers_pruned),
        }


@contextlib.asynccontextmanager
async def _connection(conn_or_app: Any) -> AsyncIterator[Any]:
    """A psycopg AsyncConnection as given, or one from a Procrastinate App's pool."""
    from psycopg import AsyncConnection

    if isinstance(conn_or_app, AsyncConnection):
        yield conn_or_app
        return
    async with pool.connection(conn_or_app) as conn:
        yield conn


def _context_value(args: dict[str, Any], key: str | None) -> str | None:
    if not key or not isinstance(args, dict) or args.get(key) is None:
        return None
    return str(args[key])


def job_timeout_seconds(config: Config, task_name: str, queue: str) -> float | None:
    """The task's timeout, else the lane of the job's queue (the worker's rule:
    :func:`jobsys.lanes.execution.effective_timeout`); None when neither is known."""
    return execution.effective_timeout(task_registry.get(task_name), config, queue)


def _worker_lost_message(job: dict[str, Any], dead_after: float) -> str:
    if job["worker_row_exists"]:
        return (
            f"worker {job['worker_id']} stopped sending heartbeats "
            f"({job['heartbeat_age_seconds']:.0f} s ago, dead after {dead_after:g} s) "
            "while running this job"
        )
    return (
        "the worker running this job is gone (its worker row was pruned), or its lane "
        "handed it over (job_orphaned or job_handed_to_reaper in that worker's log)"
    )


def _log(level: int, action: str, message: str, job: dict[str, Any], **extra: Any) -> None:
    logger.log(
        level,
        "job %s (%s): %s",
        job["id"],
        job["task_name"],
        message,
        extra={
            "action": action,
            "job_id": job["id"],
            "task": job["task_name"],
            "queue": job["queue_name"],
            **extra,
        },
    )


def _worker_lost_row(
    job: dict[str, Any],
    config: Config,
    redactor: Redactor,
    message: str,
    will_retry: bool,
    *,
    timed_out: bool = False,
) -> FailureRow:
    spec = task_registry.get(job["task_name"])
    args = job["args"] if isinstance(job["args"], dict) else {}
    return FailureRow(
        job_id=int(job["id"]),
        task=job["task_name"],
        queue=job["queue_name"],
        lane=config.lane_of(job["queue_name"]),
        attempt=int(job["attempts"]) + 1,
        error_class=TIMEOUT_ERROR_CLASS if timed_out else WORKER_LOST_ERROR_CLASS,
        message=message,
        kind="transient" if timed_out else "runtime",
        retryable=True,
        reason="timeout" if timed_out else "worker_lost",
        args=redactor.redact(args),
        account_id=_context_value(args, spec.account_arg if spec else None),
        profile_id=_context_value(args, spec.profile_arg if spec else None),
        will_retry=will_retry,
        worker=job.get("process_id")
        or (str(job["worker_id"]) if job["worker_id"] is not None else None),
        host=job.get("process_host"),
        pid=job.get("process_pid"),
    )


async def _settle(conn: Any, job: dict[str, Any], config: Config, redactor: Redactor) -> str:
    """Requeue or fail one claimed job of a dead worker; return what was done."""
    job_id = int(job["id"])
    factor = config.queues.worker.stuck_after_timeout_factor
    timeout = job_timeout_seconds(config, job["task_name"], job["queue_name"])
    running = job["running_seconds"]
    if (
        job["abort_requested"]
        and timeout is not None
        and running is not None
        and running > timeout * factor
    ):
        message = (
            f"ran {running:.0f} s, past {factor:g} x its {timeout:g} s timeout; the abort "
            f"requested for it was never honoured and "
            f"{_worker_lost_message(job, config.queues.worker.dead_after_seconds)}: failed"
        )
        row = _worker_lost_row(job, config, redactor, message, False, timed_out=True)
        await insert_failure(conn, row)
        await store.finish_job(conn, job_id, "failed")
        _log(logging.ERROR, "job_timed_out_worker_lost", "timed out, worker died: failed", job)
        return "failed"
    if job["abort_requested"]:
        await store.finish_job(conn, job_id, "aborted")
        _log(logging.INFO, "job_aborted_worker_lost", "abort requested, worker died", job)
        return "aborted"
    spec = task_registry.get(job["task_name"])
    max_requeues = config.queues.worker.max_crash_requeues
    lost_count = int(job["lost_count"])
    requeue = spec is not None and spec.rerun_safe and lost_count < max_requeues
    if requeue:
        outcome = "requeued: the task is rerun_safe"
    elif spec is None:
        outcome = "failed: the task is not registered in this process"
    elif spec.rerun_safe:
        outcome = (
            f"failed: it lost its worker {lost_count + 1} times "
            f"(max_crash_requeues = {max_requeues})"
        )
    else:
        outcome = "failed: the task is not marked rerun_safe"
    message = f"{_worker_lost_message(job, config.queues.worker.dead_after_seconds)}; {outcome}"
    await insert_failure(conn, _worker_lost_row(job, config, redactor, message, requeue))
    if requeue:
        await store.requeue_job(conn, job_id, job["queue_name"])
        _log(logging.WARNING, "job_requeued", "lost its worker: requeued", job)
        return "requeued"
    await store.finish_job(conn, job_id, "failed")
    _log(logging.ERROR, "job_worker_lost", "lost its worker: failed (worker_lost)", job)
    return "failed"


async def _settle_dead_worker_jobs(
    conn: Any,
    config: Config,
    redactor: Redactor,
    now: datetime | None,
    limit: int,
    result: ReapResult,
) -> None:
    """Claim and settle each job of a dead worker, one short transaction per job."""
    params: dict[str, Any] = {
        "now": now,
        "dead_after": config.queues.worker.dead_after_seconds,
        "limit": limit,
    }
    async with conn.transaction():
        candidates = await fetch_all(conn, store.LIST_DEAD_WORKER_JOBS, params)
    await _settle_each(conn, config, redactor, params, [int(c["id"]) for c in candidates], result)


async def _settle_each(
    conn: Any,
    config: Config,
    redactor: Redactor,
    params: dict[str, Any],
    job_ids: list[int],
    result: ReapResult,
) -> None:
    for job_id in job_ids:
        async with conn.transaction():
            job = await fetch_one(conn, store.CLAIM_DEAD_WORKER_JOB, {**params, "job_id": job_id})
            if job is None:  # another reaper has it, or the worker finished it after all
                continue
            outcome = await _settle(conn, job, config, redactor)
        getattr(result, outcome).append(int(job["id"]))


async def _abort_stuck(conn: Any, config: Config, now: datetime | None, result: ReapResult) -> None:
    factor = config.queues.worker.stuck_after_timeout_factor
    timeouts = [lane.timeout_seconds for lane in config.lanes.values()]
    timeouts += [s.timeout_seconds for s in task_registry.registry().values() if s.timeout_seconds]
    # Only jobs older than the smallest possible threshold are worth a look.
    min_running = min(timeouts, default=0.0) * factor
    async with conn.transaction():
        rows = await fetch_all(
            conn,
            store.RUNNING_UNDER_LIVE_WORKERS,
            {
                "now": now,
                "dead_after": config.queues.worker.dead_after_seconds,
                "min_running": min_running,
            },
        )
    for row in rows:
        timeout = job_timeout_seconds(config, row["task_name"], row["queue_name"])
        if timeout is None or row["running_seconds"] <= timeout * factor:
            continue
        job_id = int(row["id"])
        if row["abort_requested"]:
            result.still_stuck.append(job_id)
            continue
        async with conn.transaction():
            await store.request_abort(conn, job_id)
        result.stuck.append(job_id)
        _log(
            logging.ERROR,
            "job_stuck",
            f"has run {row['running_seconds']:.0f} s, over {factor:g} x its {timeout:g} s "
            f"timeout, under live worker {row['worker_id']}: abort requested",
            row,
            running_seconds=round(row["running_seconds"], 1),
        )


async def _mark_dead_workers(
    conn: Any, config: Config, now: datetime | None, result: ReapResult
) -> None:
    params = {"now": now, "dead_after": config.queues.worker.dead_after_seconds}
    async with conn.transaction():
        rows = await fetch_all(conn, store.MARK_DEAD_PROCESSES, params)
    result.processes_marked_dead = [str(r["id"]) for r in rows]
    for process_id in result.processes_marked_dead:
        logger.warning(
            "worker process %s stopped sending heartbeats: marked dead",
            process_id,
            extra={"action": "worker_process_dead", "worker_process": process_id},
        )
    async with conn.transaction():
        rows = await fetch_all(conn, store.PRUNE_DEAD_WORKERS, params)
    result.workers_pruned = [int(r["id"]) for r in rows]


async def reap_once(
    conn_or_app: Any,
    config: Config,
    *,
    now: datetime | None = None,
    limit: int = MAX_JOBS_PER_PASS,
) -> ReapResult:
    """One reaper pass; see the module docstring.

    ``conn_or_app`` is a psycopg AsyncConnection or a Procrastinate App (a connection
    is taken from its pool). ``now`` replaces the database clock in every comparison
    (tests); by default the database's ``now()`` is used, never the host clock.
    """
    result = ReapResult()
    redactor = Redactor.for_config(config)
    continuity = database_continuity()
    judge_the_dead = continuity is None or continuity >= config.queues.worker.dead_after_seconds
    async with _connection(conn_or_app) as conn:
        if judge_the_dead:
            await _settle_dead_worker_jobs(conn, config, redactor, now, limit, result)
        await _abort_stuck(conn, config, now, result)
        if judge_the_dead:
            await _mark_dead_workers(conn, config, now, result)
    if result.did_something:
        logger.info(
            "reaper: %s",
            ", ".join(f"{k} {v}" for k, v in result.counts().items() if v),
            extra={"action": "reaper_pass", **result.counts()},
        )
    return result


async def settle_handed_over(conn_or_app: Any, config: Config, job_ids: list[int]) -> ReapResult:
    """Settle now, by the dead-worker rules, jobs a live lane has just handed over
    (``doing`` without a worker: ``job_orphaned``), instead of at the next pass. No
    worker is judged here, so the outage rule of :func:`reap_once` does not apply."""
    result = ReapResult()
    redactor = Redactor.for_config(config)
    params = {"now": None, "dead_after": config.queues.worker.dead_after_seconds}
    async with _connection(conn_or_app) as conn:
        await _settle_each(conn, config, redactor, params, job_ids, result)
    return result


class ReaperService(Periodic):
    """The reaper loop every ``jobsys worker`` process runs (a ``WorkerService``).

    Options: ``config.queues.worker.reap_interval_seconds`` (period),
    ``dead_after_seconds``, ``stuck_after_timeout_factor``, ``max_crash_requeues``.
    A failed pass is logged (``reaper_error``) and retried next period; after
    ``MAX_CONSECUTIVE_ERRORS`` in a row it raises for the supervisor.
    """

    name = "reaper"
    max_consecutive_errors = MAX_CONSECUTIVE_ERRORS
    log = logger

    def __init__(self, config: Config) -> None:
        super().__init__(config.queues.worker.reap_interval_seconds)
        self.config = config
        self.last_result: ReapResult | None = None

    async def run_pass(self, app: App, now: datetime) -> ReapResult:
        # The reaper compares times on the database's clock, never the host's ``now``.
        return await reap_once(app, self.config)
