"""The one function every job insert goes through, and its announcement.

``jobsys.defer``/``defer_many``, schedule ticks, fan-out batches, pipeline steps and
retries all call :func:`enqueue`: the jobs are written by the engine's one insert path
(``jobsys.engine.inserts``) on the caller's connection, and announced on the
``jobs_changed`` live topic the same way, whoever inserted them: ``{"deferred": n,
"ids": [first ten]}`` for new jobs, ``{"retried": n}`` for retried ones.
"""

from __future__ import annotations

from typing import Any

from jobsys.engine import inserts
from jobsys.engine.inserts import (
    FanoutBatch,
    Inserted,
    NewJob,
    NewJobs,
    Retry,
    Source,
    UniqueKey,
)
from jobsys.live.publish import announce_jobs_changed, jobs_changed_channel

__all__ = [
    "FanoutBatch",
    "Inserted",
    "NewJob",
    "NewJobs",
    "Retry",
    "UniqueKey",
    "enqueue",
    "waiting_with_queueing_lock",
]

#: The job waiting under a queueing lock (id, task), to name it in a refusal.
waiting_with_queueing_lock = inserts.waiting_with_queueing_lock


async def enqueue(conn: Any, source: Source) -> Inserted:
    """Insert (or retry) the jobs of ``source`` on ``conn``; announce them when any."""
    # New jobs outside a worker: the insert statement sends the NOTIFY itself (one round
    # trip); inside a worker announcements are coalesced instead.
    channel = jobs_changed_channel()
    announce = inserts.Announce(channel, "jobs_changed") if channel else None
    done = await inserts.insert(conn, source, announce)
    if done.count and not done.announced:
        if done.kind == "retried":
            data: dict[str, Any] = {"retried": done.count}
        else:
            data = {"deferred": done.count, "ids": done.ids[:10]}
        await announce_jobs_changed(conn, data)
    return done
