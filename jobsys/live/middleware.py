"""The worker middleware that turns job outcomes into coalesced ``jobs_changed`` events.

Procrastinate notifies only on insert and abort; this middleware records each job's
start and outcome (succeeded, failed, aborted) in the process's
:class:`~jobsys.live.coalesce.Coalescer`: no I/O on the job's path, and a broken
recorder is logged, never allowed to change the job's own outcome.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jobsys.live.coalesce import Coalescer

logger = logging.getLogger(__name__)

TOPIC = "jobs_changed"


def _record(coalescer: Coalescer, context: Any, what: str) -> None:
    try:
        job = context.job
        coalescer.add_job_change(TOPIC, what, job.id, job.queue)
    except Exception:
        logger.exception("live event not recorded", extra={"action": "live_record_failed"})


def _outcome(exc: BaseException) -> str:
    from jobsys.engine.api import JobAborted

    if isinstance(exc, (JobAborted, asyncio.CancelledError)):
        return "aborted"
    return "failed"


def live_events(
    coalescer: Coalescer,
) -> Callable[[Callable[[], Awaitable[Any]], Any, Any], Awaitable[Any]]:
    """A Procrastinate worker middleware ``(call_next, context, worker)``."""

    async def live_events_middleware(
        call_next: Callable[[], Awaitable[Any]], context: Any, worker: Any
    ) -> Any:
        _record(coalescer, context, "started")
        try:
            result = await call_next()
        except BaseException as exc:
            _record(coalescer, context, _outcome(exc))
            raise
        _record(coalescer, context, "succeeded")
        return result

    return live_events_middleware
