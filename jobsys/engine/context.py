"""What the lane worker tells the code a job runs in, beside Procrastinate's context.

Import-light: task wrappers (``jobsys.lanes.execution``) read it on every call.
"""

from __future__ import annotations

from contextvars import ContextVar

#: The queue of the job running in this asyncio task (set by the lane worker): a job
#: deferred with ``queue="b"`` runs under the timeout of b's lane, not the lane of the
#: queue its task declares.
JOB_QUEUE: ContextVar[str | None] = ContextVar("jobsys_job_queue", default=None)
