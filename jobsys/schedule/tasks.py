"""jobsys's own schedule tasks: fan-out batches and retention (``BUILTIN_MODULES``)."""

from __future__ import annotations

from typing import Any

from jobsys.engine import pool
from jobsys.tasks import task


@task(
    queue="maintenance",
    name="jobsys.fanout_batch",
    rerun_safe=True,  # a re-run after a crash is a no-op or redoes a rolled-back batch
    account_arg=None,
    profile_arg=None,
    pass_context=True,
)
async def fanout_batch(context: Any, run_id: int, cursor: int | None) -> None:
    """One batch of a fan-out run (enqueued on the per-item queue, see fanout.py)."""
    from jobsys.schedule.fanout import run_batch

    async with pool.connection(context.app) as conn:
        await run_batch(conn, run_id, cursor)


@task(
    queue="maintenance",
    name="jobsys.purge_retention",
    rerun_safe=True,
    account_arg=None,
    profile_arg=None,
    pass_context=True,
)
async def purge_retention(context: Any) -> dict[str, int]:
    """Delete finished jobs, old ticks and finished fan-out runs past their retention."""
    from jobsys.config.application import config_for
    from jobsys.schedule.retention import purge

    config = config_for(context)
    async with pool.connection(context.app) as conn:
        result = await purge(conn, config.queues.retention)
    return result.deleted
