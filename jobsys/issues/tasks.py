"""jobsys's built-in health tasks, scheduled in ``config/schedule.yaml``.

- ``jobsys.check_queue_health`` (entry ``check_queue_health``, every minute): queue and
  lane thresholds, and auto-resolution of quiet job-failure issues;
- ``jobsys.check_service_health`` (entry ``check_ai_service_health``, every minute):
  HTTP checks of ``health.services``.

The configuration comes from the worker (``additional_context["config"]``) when it
passes it, else it is loaded once from ``JOBSYS_CONFIG_DIR``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from jobsys.tasks import task

if TYPE_CHECKING:
    from jobsys.config import Config

MAINTENANCE_QUEUE = "maintenance"


@functools.cache
def _config_from_env() -> Config:
    from jobsys.app import load_config
    from jobsys.settings import from_env

    return load_config(from_env(), with_tasks=False)


def config_of(context: Any) -> Config:
    config = (context.additional_context or {}).get("config")
    return config if config is not None else _config_from_env()


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
        result = await check_queues(conn, config_of(context))
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
        result = await check_services(conn, config_of(context))
    return {"open": result["open"], "resolved": result["resolved"]}
