"""Nothing lost: the pass that makes sure every failed attempt ends up recorded.

Each pass (:func:`run_once`) does three things, each also callable alone:

1. replay the local spool (failures the database could not take at capture time);
2. reconcile from Procrastinate's events: a ``failed``/``deferred_for_retry`` event
   older than the grace period with no failure row (the worker died before writing
   it, or the task was not found, which Procrastinate raises before any middleware)
   gets a row built from the job itself;
3. group rows other domains inserted without an issue (:func:`group_pending`).

:class:`FailureMaintenance` runs the pass beside the lanes in every worker process
(``jobsys.app.worker_services``). It logs only when it did something.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobsys import engine
from jobsys import tasks as task_registry
from jobsys.db.query import autocommit
from jobsys.engine import pool as engine_pool
from jobsys.failures import classify, store
from jobsys.failures.capture import context_value, spool_directory
from jobsys.failures.recorder import group_pending, record_failure
from jobsys.failures.redaction import Redactor
from jobsys.failures.spool import PoisonRecord, Spool
from jobsys.periodic import Periodic

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.engine.api import App

logger = logging.getLogger(__name__)

#: Seconds between passes.
INTERVAL_SECONDS = 5.0
#: An event must be this old before reconciliation writes a (poorer) row for it, so
#: capture and spool replay, which know the exception, win.
GRACE_SECONDS = 120.0
#: How far back the first pass of a process looks.
LOOKBACK_SECONDS = 24 * 3600.0
BATCH = 500
UNCAPTURED_CLASS = "jobsys.UncapturedFailure"
TASK_NOT_FOUND_CLASS = engine.TASK_NOT_FOUND_CLASS


@dataclass
class PassResult:
    replayed: int = 0
    reconciled: int = 0
    grouped: int = 0
    spool_remaining: int = 0

    @property
    def did_something(self) -> bool:
        return bool(self.replayed or self.reconciled or self.grouped)


def row_from_event(
    event: dict[str, Any], config: Config, known_tasks: set[str]
) -> store.FailureRow:
    """A failure row for an attempt only Procrastinate's events know about."""
    task = str(event["task_name"])
    spec = task_registry.get(task)
    args = Redactor.for_config(config).redact(dict(event["args"] or {}))
    found = spec is not None or task in known_tasks
    if found:
        error_class = UNCAPTURED_CLASS
        message = (
            "the attempt failed but its error was not captured "
            "(the worker stopped before recording it)"
        )
    else:
        error_class = TASK_NOT_FOUND_CLASS
        message = f"task {task!r} is not registered in the worker that ran it"
    at = event["at"]
    return store.FailureRow(
        job_id=int(event["job_id"]),
        task=task,
        queue=str(event["queue_name"]),
        lane=config.lane_of(str(event["queue_name"])),
        attempt=int(event["attempt"]),
        args=args,
        error_class=error_class,
        message=message,
        kind=classify.RUNTIME,
        reason="exception" if found else "task_not_found",
        retryable=True,
        will_retry=event["type"] == "deferred_for_retry",
        account_id=context_value(args, spec.account_arg if spec else "account_id"),
        profile_id=context_value(args, spec.profile_arg if spec else "profile_id"),
        service=spec.service if spec else None,
        occurred_at=at if at.tzinfo else at.replace(tzinfo=UTC),
    )


async def reconcile_events(
    conn: Any,
    config: Config,
    *,
    after_id: int = 0,
    grace_seconds: float = GRACE_SECONDS,
    limit: int = BATCH,
    known_tasks: set[str] | None = None,
) -> tuple[int, int]:
    """Record failed attempts that have events but no row. Returns (recorded, the event
    id the next call may start after)."""
    upto = await store.events_settled(conn, after_id, grace_seconds)
    if upto <= after_id:
        return 0, after_id
    events = await store.unrecorded_attempts(conn, after_id, upto, grace_seconds, limit)
    recorded = 0
    for event in events:
        row = row_from_event(event, config, known_tasks or set())
        if await record_failure(conn, row, config) is not None:
            recorded += 1
    next_after = int(events[-1]["event_id"]) if len(events) >= limit else upto
    return recorded, next_after


async def replay_spool(pool: Any, config: Config, spool: Spool) -> tuple[int, int]:
    """Replay the spool into the database. Returns (replayed, still spooled)."""
    if not spool.pending():
        return 0, 0
    import psycopg

    async def record(row: store.FailureRow) -> None:
        async with pool.connection() as conn:
            try:
                await record_failure(conn, row, config)
            except (psycopg.DataError, psycopg.IntegrityError, psycopg.ProgrammingError) as exc:
                raise PoisonRecord(f"job {row.job_id} attempt {row.attempt}: {exc}") from exc

    result = await spool.replay(record)
    return result.replayed, result.remaining


class FailureMaintenance(Periodic):
    """WorkerService: spool replay, reconciliation from events, grouping of pending rows.
    A failed pass raises at once (the supervisor restarts the service with backoff)."""

    name = "failures"
    log = logger

    def __init__(
        self,
        config: Config,
        home: Path,
        *,
        interval_seconds: float = INTERVAL_SECONDS,
        grace_seconds: float = GRACE_SECONDS,
    ) -> None:
        super().__init__(interval_seconds)
        self.config = config
        self.spool = Spool(spool_directory(home))
        self.grace = grace_seconds
        self.after_id: int | None = None

    async def run_pass(self, app: App, now: datetime) -> PassResult:
        return await self.run_once(app)

    async def run_once(self, app: App) -> PassResult:
        pool = engine_pool.of(app)
        result = PassResult()
        result.replayed, result.spool_remaining = await replay_spool(pool, self.config, self.spool)
        async with pool.connection() as pooled, autocommit(pooled) as conn:
            if self.after_id is None:
                self.after_id = await store.events_start(conn, LOOKBACK_SECONDS)
            result.reconciled, self.after_id = await reconcile_events(
                conn,
                self.config,
                after_id=self.after_id,
                grace_seconds=self.grace,
                known_tasks=set(app.tasks),
            )
            result.grouped = await group_pending(conn, self.config)
        if result.did_something:
            logger.info(
                "failures: %s replayed, %s reconciled, %s grouped",
                result.replayed,
                result.reconciled,
                result.grouped,
                extra={"action": "failures_maintenance", **vars(result)},
            )
        return result
