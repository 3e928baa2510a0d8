"""The Procrastinate classes the rest of jobsys uses, re-exported from one place, and
the questions its middlewares ask of the worker's objects (:func:`strategy_retries`).

Domains import this module lazily (inside functions), as they imported Procrastinate:
it imports Procrastinate itself, which a command that never runs a job should not pay
for.
"""

from __future__ import annotations

from typing import Any

from procrastinate import App, BaseRetryStrategy, JobContext, RetryDecision
from procrastinate.exceptions import (
    AlreadyEnqueued,
    ConnectorException,
    JobAborted,
    TaskNotFound,
    UniqueViolation,
)
from procrastinate.job_context import AbortReason
from procrastinate.jobs import Job, Status

__all__ = [
    "AbortReason",
    "AlreadyEnqueued",
    "App",
    "BaseRetryStrategy",
    "ConnectorException",
    "Job",
    "JobAborted",
    "JobContext",
    "RetryDecision",
    "Status",
    "TaskNotFound",
    "UniqueViolation",
    "shutdown_requeues",
    "strategy_retries",
]


def strategy_retries(exc: BaseException, context: JobContext, worker: Any) -> bool:
    """Whether the retry strategy of the job's task runs it again after ``exc``, as
    Procrastinate's worker decides (``Task.get_retry_exception``); False for a task
    the worker does not know."""
    task = worker.app.tasks.get(context.job.task_name)
    if task is None:
        return False
    return task.get_retry_exception(exception=exc, job=context.job) is not None


def shutdown_requeues(task_name: str) -> bool:
    """Whether a job cut by its worker's shutdown (still running after the grace
    period) runs again: only a ``rerun_safe`` task's, as the reaper decides for the
    jobs of a worker that died. The cut run may have done part of its work (sent a
    message, charged a card): running it again is the task's author's call."""
    from jobsys import tasks

    spec = tasks.get(task_name)
    return spec is not None and spec.rerun_safe
