"""jobsys's built-in health tasks, scheduled in ``config/schedule.yaml``.

- ``jobsys.check_queue_health`` (entry ``check_queue_health``, every minute): queue and
  lane thresholds, and auto-resolution of quiet job-failure issues;
- ``jobsys.check_service_health`` (entry ``check_ai_service_health``, every minute):
  HTTP checks of ``health.services``.

The configuration comes from the worker (``jobsys.app.config_for``).
"""

from __future__ import annotations

from typing import Any

from jobsys.app import config_for
from jobsys.tasks import task

MAINTENANCE_QUEUE = "maintenance"


@task(
    queue=MAINTENANCE_QUEUE,
    name="jobsys.check_queue_health",
    pass_context=True,
    account_arg=None,
    profile_arg=None,
    rerun_safe=True,
)
async def check_queue_health(context: Any) -> dict[str, Any]:
    """Open or resolve ``queue_health`` issues (the seed's CheckQueueHealthJob)."""
    from jobsys.db.query import autocommit
    from jobsys.issues.health import check_queues

    async with context.app.connector.pool.connection() as pooled, autocommit(pooled) as conn:
        result = await check_queues(conn, config_for(context))
    return {"open": result["open"], "resolved": result["resolved"]}


@task(
    queue=MAINTENANCE_QUEUE,
    name="jobsys.check_service_health",
    pass_context=True,
    account_arg=None,
    profile_arg=None,
    rerun_safe=True,
)
async def check_service_health(context: Any) -> dict[str, Any]:
    """Open or resolve ``service_outage`` issues (the seed's CheckAiMicroserviceHealthJob)."""
    from jobsys.db.query import autocommit
    from jobsys.issues.services import check_services

    async with context.app.connector.pool.connection() as pooled, autocommit(pooled) as conn:
        result = await check_services(conn, config_for(context))
    return {"open": result["open"], "resolved": result["resolved"]}
