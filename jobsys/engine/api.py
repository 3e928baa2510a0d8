"""The Procrastinate classes the rest of jobsys uses, re-exported from one place.

Domains import this module lazily (inside functions), as they imported Procrastinate:
it imports Procrastinate itself, which a command that never runs a job should not pay
for.
"""

from __future__ import annotations

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
]
