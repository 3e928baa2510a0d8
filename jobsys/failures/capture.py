"""Failure capture: the Procrastinate worker middleware that records every failed attempt.

It wraps each job, lets any exception through unchanged (the job's outcome is
Procrastinate's to decide), and on the way out records the attempt: kind, retry
verdict, redacted args, scrubbed message and traceback, account and profile, the
issue it belongs to. The write is short (one round trip, one transaction, lock and
statement timeouts); if the database cannot take it now, the row goes to the local
spool and is replayed later, so a locked table never holds jobs. A bug in capture is
logged and swallowed: it never changes the job's outcome or stops the worker.

``TaskNotFound`` is raised by Procrastinate before worker middlewares run, so those
failures are recorded by reconciliation (``jobsys.failures.reconcile``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import traceback as tb_module
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobsys import tasks as task_registry
from jobsys.engine import pool
from jobsys.failures import classify
from jobsys.failures import fingerprint as fp
from jobsys.failures.recorder import record_failure
from jobsys.failures.redaction import Redactor
from jobsys.failures.spool import Spool
from jobsys.failures.store import FailureRow

if TYPE_CHECKING:
    from jobsys.config import Config

logger = logging.getLogger(__name__)

#: How long the capture transaction may wait for a lock before the row is spooled.
CAPTURE_LOCK_TIMEOUT_MS = 500
CAPTURE_STATEMENT_TIMEOUT_MS = 2000
#: Whole budget of one capture write (pool checkout included) before spooling.
CAPTURE_BUDGET_SECONDS = 3.0
MAX_TRACEBACK_CHARS = 20_000
#: Exceptions that end the process rather than the job: let them through untouched.
_NOT_FAILURES = (KeyboardInterrupt, SystemExit, GeneratorExit)


def context_value(args: dict[str, Any], key: str | None) -> str | None:
    if not key or key not in args or args[key] is None:
        return None
    return str(args[key])


def will_retry(exc: BaseException, context: Any, worker: Any) -> bool:
    """Whether Procrastinate will run the job again, decided as its worker does."""
    from jobsys.engine.api import AbortReason, JobAborted, shutdown_requeues, strategy_retries

    if isinstance(exc, JobAborted) and (context.abort_reason() != AbortReason.SHUTDOWN):
        return False
    if shutdown_cut(exc, context):
        return shutdown_requeues(context.job.task_name)
    try:
        return strategy_retries(exc, context, worker)
    except Exception:
        return False


def shutdown_cut(exc: BaseException, context: Any) -> bool:
    """Whether ``exc`` is the cancellation of a job still running when its worker's
    shutdown grace period ran out."""
    from jobsys.engine.api import AbortReason

    return classify.is_abort(exc) and context.abort_reason() == AbortReason.SHUTDOWN


#: How ``traceback.format_exception`` joins a chain of exceptions, oldest first.
_CAUSE = "\nThe above exception was the direct cause of the following exception:\n\n"
_CONTEXT = "\nDuring handling of the above exception, another exception occurred:\n\n"


def format_traceback(exc: BaseException) -> str:
    """What ``traceback.format_exception(exc)`` prints, without the ``^^^^`` markers.

    To place those markers Python 3.11 finds each frame's column positions and parses
    its source line: with the dozen frames a worker puts under a job, that was most of
    the time spent describing a failure, for markers an operator does without. The
    frames come from ``StackSummary.extract`` (no positions), the chain is joined as
    the standard library does; exception groups, rare, keep the standard format.
    """
    chain: list[tuple[BaseException, str]] = []  # newest first, with how it follows
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None:
        if isinstance(current, BaseExceptionGroup):
            return "".join(tb_module.format_exception(exc))
        seen.add(id(current))
        cause, context = current.__cause__, current.__context__
        if cause is not None and id(cause) not in seen:
            chain.append((current, _CAUSE))
            current = cause
        elif context is not None and not current.__suppress_context__ and id(context) not in seen:
            chain.append((current, _CONTEXT))
            current = context
        else:
            chain.append((current, ""))
            current = None
    parts: list[str] = []
    for one, follows in reversed(chain):
        parts.append(follows)
        if one.__traceback__ is not None:
            parts.append("Traceback (most recent call last):\n")
            frames = tb_module.StackSummary.extract(tb_module.walk_tb(one.__traceback__))
            parts.extend(frames.format())
        parts.extend(tb_module.format_exception_only(type(one), one))
    return "".join(parts)


def build_row(
    exc: BaseException,
    *,
    job: Any,
    config: Config,
    lane: str | None,
    worker_name: str | None,
    retrying: bool,
    redactor: Redactor | None = None,
    shutdown: bool = False,
) -> FailureRow:
    """The failure row for ``exc`` raised by ``job`` in THIS process (its host and pid
    are recorded): redacted, scrubbed, fingerprinted. ``shutdown``: ``exc`` is the
    cut of a job its worker's shutdown stopped (:func:`shutdown_cut`); the row says so
    and what follows, and, when the job is not run again, is a ``runtime`` failure (as
    a dead worker's ``worker_lost``) that no automatic retry picks up; when it is
    requeued, the row opens no issue (``FailureRow.opens_issue``)."""
    spec = task_registry.get(job.task_name)
    verdict = classify.classify(exc, spec, config.queues.classification)
    text = str(exc)
    if shutdown:
        grace = config.queues.worker.shutdown_grace_seconds
        text = f"still running at the end of the worker's {grace:g} s shutdown grace period: "
        if retrying:
            text += "requeued, the task is rerun_safe"
        else:
            text += (
                "failed, not requeued, as the task is not marked rerun_safe (the cut run "
                "may have done part of its work); `jobsys retry` runs it again"
            )
            verdict = classify.Verdict(classify.RUNTIME, True, reason="aborted")
    raw_args = dict(job.task_kwargs or {})
    redactor = redactor or Redactor.for_config(config)
    args, (message, trace) = redactor.redact_with_text(
        raw_args, text, format_traceback(exc)[-MAX_TRACEBACK_CHARS:]
    )
    error_class = classify.dotted_name(type(exc))
    app_packages = [spec.func.__module__.split(".")[0]] if spec is not None else []
    frame = fp.application_frame(exc.__traceback__, app_packages)
    return FailureRow(
        job_id=int(job.id),
        task=job.task_name,
        queue=job.queue,
        lane=lane,
        attempt=int(job.attempts) + 1,
        args=args,
        error_class=error_class,
        message=message,
        traceback=trace,
        account_id=context_value(args, spec.account_arg if spec else "account_id"),
        profile_id=context_value(args, spec.profile_arg if spec else "profile_id"),
        kind=verdict.kind,
        reason=verdict.reason,
        retryable=verdict.retryable,
        will_retry=retrying,
        worker=worker_name,
        host=socket.gethostname(),
        pid=os.getpid(),
        service=verdict.service,
        fingerprint=fp.job_failure(job.task_name, error_class, message, frame, verdict.kind),
        occurred_at=datetime.now(UTC),
        # A deploy's cut of a rerun_safe job: recorded, but no alert (it runs again);
        # a cut job that is failed still opens its issue, a human must decide.
        opens_issue=not (shutdown and retrying),
    )


class FailureCapture:
    """The worker middleware ``(call_next, context, worker)``; see the module docstring."""

    def __init__(self, config: Config, spool: Spool) -> None:
        self.config = config
        self.spool = spool
        self.redactor = Redactor.for_config(config)

    async def __call__(self, call_next: Any, context: Any, worker: Any) -> Any:
        try:
            return await call_next()
        except _NOT_FAILURES:
            raise
        except BaseException as exc:
            # Awaited here, before Procrastinate stores the job's outcome: the failure is
            # committed (synchronously: durable) or spooled first, so no crash leaves a
            # failed job without its row.
            await self._capture_safely(exc, context, worker)
            raise

    async def _capture_safely(self, exc: BaseException, context: Any, worker: Any) -> None:
        job_id = getattr(context.job, "id", None)
        try:
            extra = context.additional_context or {}
            row = build_row(
                exc,
                job=context.job,
                config=self.config,
                lane=extra.get("lane"),
                worker_name=extra.get("worker_process") or worker.worker_name,
                retrying=will_retry(exc, context, worker),
                redactor=self.redactor,
                shutdown=shutdown_cut(exc, context),
            )
        except Exception as bug:
            logger.error(
                "failure capture could not describe job %s: %s",
                job_id,
                type(bug).__name__,
                extra={"action": "failure_capture_error", "job_id": job_id},
            )
            return
        try:
            await self.write(row, pool.of(worker.app))
        except asyncio.CancelledError:
            # Cancelled mid-write (a hard stop, an abort): the write may or may not have
            # committed. Spool without awaiting anything, then go on being cancelled; a
            # replay of a row that did commit counts nothing (unique per job and attempt).
            self._append(row, job_id, "cancelled")
            raise
        except Exception as problem:
            await asyncio.to_thread(self._append, row, job_id, type(problem).__name__)

    def _append(self, row: FailureRow, job_id: Any, why: str) -> None:
        """Keep ``row`` in the local spool for replay (blocking: a file append)."""
        try:
            self.spool.append([row])
        except Exception as spool_problem:
            logger.critical(
                "failure of job %s could be neither written (%s) nor spooled (%s)",
                job_id,
                why,
                spool_problem,
                extra={"action": "failure_capture_lost", "job_id": job_id},
            )
            return
        logger.warning(
            "failure of job %s spooled, the database did not take it: %s",
            job_id,
            why,
            extra={"action": "failure_spooled", "job_id": job_id},
        )

    async def write(self, row: FailureRow, pool: Any) -> None:
        async with (
            asyncio.timeout(CAPTURE_BUDGET_SECONDS),
            pool.connection(timeout=CAPTURE_BUDGET_SECONDS) as conn,
        ):
            await record_failure(
                conn,
                row,
                self.config,
                lock_timeout_ms=CAPTURE_LOCK_TIMEOUT_MS,
                statement_timeout_ms=CAPTURE_STATEMENT_TIMEOUT_MS,
            )


def spool_directory(home: Path) -> Path:
    return home / "spool"


def capture_middleware(config: Config, home: Path | None = None) -> FailureCapture:
    """The capture middleware for ``worker_middlewares(config)``; spools under ``home``
    (default: ``JOBSYS_HOME``)."""
    if home is None:
        from jobsys.settings import from_env

        home = from_env().home
    return FailureCapture(config, Spool(spool_directory(home)))
