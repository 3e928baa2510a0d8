"""jobsys's built-in health tasks, scheduled in ``config/schedule.yaml``.

- ``jobsys.check_queue_health`` (entry ``check_queue_health``, every minute): queue and
  lane thresholds, and auto-resolution of quiet job-failure issues;
- ``jobsys.check_service_health`` (entry ``check_ai_service_health``, every minute):
  HTTP checks of ``health.services``.

The configuration comes from the worker (``jobsys.config.application.config_for``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from jobsys.config.application import config_for
from jobsys.engine import pool
from jobsys.tasks import task

MAINTENANCE_QUEUE = "maintenance"
#: What every built-in health task is declared with: no account context, safe to rerun.
HEALTH_TASK = {
    "queue": MAINTENANCE_QUEUE,
    "pass_context": True,
    "account_arg": None,
    "profile_arg": None,
    "rerun_safe": True,
}


async def _run_check(
    context: Any, check: Callable[[Any, Any], Awaitable[dict[str, Any]]]
) -> dict[str, Any]:
    """One health pass on an autocommit pool connection; returns what opened/resolved."""
    from jobsys.db.query import autocommit

    async with pool.connection(context.app) as pooled, autocommit(pooled) as conn:
        result = await check(conn, config_for(context))
    return {"open": result["open"], "resolved": result["resolved"]}


@task(name="jobsys.check_queue_health", **HEALTH_TASK)  # type: ignore[call-overload]
async def check_queue_health(context: Any) -> dict[str, Any]:
    """Open or resolve ``queue_health`` issues (the seed's CheckQueueHealthJob)."""
    from jobsys.issues.health import check_queues

    return await _run_check(context, check_queues)


@task(name="jobsys.check_service_health", **HEALTH_TASK)  # type: ignore[call-overload]
async def check_service_health(context: Any) -> dict[str, Any]:
    """Open or resolve ``service_outage`` issues (the seed's CheckAiMicroserviceHealthJob)."""
    from jobsys.issues.probes import check_services

    return await _run_check(context, check_services)
