"""The worker middleware that keeps pipeline steps in step with their jobs.

Only jobs of tasks used by some declared pipeline pay for it (one indexed lookup).
A job whose pipeline was cancelled does not run (it ends ``aborted``). After the
task: success marks the step and enqueues the next stage in one transaction; a
failure with no automatic retry left (the task's own retry strategy says so) fails
the pipeline. Bookkeeping errors are logged and never change the job's outcome.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from jobsys.engine import pool
from jobsys.pipelines import definitions as pipelines
from jobsys.pipelines import store as pipeline_store

logger = logging.getLogger(__name__)


def _outcome(exc: BaseException, context: Any, worker: Any) -> tuple[str, bool]:
    """(outcome, final) of a job that raised ``exc``, as the worker will see it."""
    from jobsys.engine.api import AbortReason, JobAborted, shutdown_requeues, strategy_retries

    if isinstance(exc, (JobAborted, asyncio.CancelledError)):
        if context.abort_reason() == AbortReason.SHUTDOWN:
            # The worker stops: a rerun_safe job runs again elsewhere, any other fails.
            return "failed", not shutdown_requeues(context.job.task_name)
        return "cancelled", True
    return "failed", not strategy_retries(exc, context, worker)


async def pipeline_middleware(call_next: Any, context: Any, worker: Any) -> Any:
    job = context.job
    if job.task_name not in pipelines.step_task_names():
        return await call_next()
    ref = None
    try:
        async with pool.connection(worker.app) as conn:
            ref = await pipeline_store.begin_step(conn, job.id)
    except Exception:
        logger.exception(
            "pipeline step start not recorded",
            extra={"action": "pipeline_step_error", "job_id": job.id},
        )
    if ref is None:
        return await call_next()
    if ref.pipeline_status == "cancelled":
        from jobsys.engine.api import JobAborted

        logger.info(
            "pipeline cancelled: step not run",
            extra={
                "action": "pipeline_step_skipped",
                "job_id": job.id,
                "pipeline_id": ref.pipeline_id,
            },
        )
        raise JobAborted(f"pipeline {ref.pipeline_id} was cancelled")
    try:
        result = await call_next()
    except BaseException as exc:
        outcome, final = _outcome(exc, context, worker)
        await _finish(worker, ref, outcome, final=final)
        raise
    await _finish(worker, ref, "succeeded", final=True)
    return result


async def _finish(worker: Any, ref: pipeline_store.StepRef, outcome: str, *, final: bool) -> None:
    try:
        async with pool.connection(worker.app) as conn:
            status = await pipeline_store.finish_step(conn, ref.step_id, outcome, final=final)
        logger.debug(
            "pipeline step finished",
            extra={
                "action": "pipeline_step_finished",
                "pipeline_id": ref.pipeline_id,
                "step_id": ref.step_id,
                "outcome": outcome,
                "pipeline_status": status,
            },
        )
    except Exception:
        logger.exception(
            "pipeline step end not recorded",
            extra={"action": "pipeline_step_error", "step_id": ref.step_id},
        )
