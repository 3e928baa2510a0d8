"""The one place that assembles a running worker process: the middlewares wrapping
every job, the background services and lifecycle hooks each domain contributes, and
``run_worker``, which starts them. Only the edges (``jobsys.cli``) import it.

Loading the configuration and the application's task modules is
``jobsys.config.application``; building the Procrastinate App with every task is
``jobsys.lanes.execution.build_engine_app``.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from typing import TYPE_CHECKING, Any, Protocol

from jobsys import streams
from jobsys.config import Config
from jobsys.errors import UsageError

if TYPE_CHECKING:
    from jobsys.engine.api import App
    from jobsys.lanes.logs import LogFormat
    from jobsys.lanes.runtime import RuntimeResult
    from jobsys.settings import Settings


def worker_middlewares(config: Config) -> list[Any]:
    """Procrastinate worker middlewares wrapping every job, outermost first.

    The seam where domains hook into job execution: failure capture, pipeline step
    bookkeeping, live events. Each is ``async (call_next, context, worker)``; a broken
    middleware must log and re-raise the job's own outcome, never change it.
    """
    from jobsys.failures import logredact
    from jobsys.failures.capture import capture_middleware
    from jobsys.flow.watch import start_middleware
    from jobsys.live import services as live_services
    from jobsys.pipelines.middleware import pipeline_middleware

    logredact.install(config)  # Procrastinate logs job args; keep secrets out
    middlewares: list[Any] = []
    middlewares.extend(live_services.middlewares(config))  # outer: counts every outcome
    middlewares.append(capture_middleware(config))  # records, then re-raises
    middlewares.append(pipeline_middleware)  # sees the task's own outcome
    middlewares.append(start_middleware)  # innermost: a rated job's real start
    return middlewares


class WorkerService(Protocol):
    """A background service that runs inside every ``jobsys worker`` process beside the
    lanes: the scheduler, the reaper, the live-event flusher, the metrics endpoint.

    ``run`` loops until ``stop`` is set (River's shape: a ``run_once`` returning a small
    result, wrapped by a thin ticker loop). If it raises, the worker restarts it with
    backoff and exits non-zero when it cannot be restored, so a supervisor restarts
    the whole process.
    """

    name: str

    async def run(self, app: App, stop: asyncio.Event) -> None: ...


def worker_services(config: Config) -> list[WorkerService]:
    """The services every worker process runs (each domain adds its own here)."""
    from jobsys.failures.reconcile import FailureMaintenance
    from jobsys.jobs.search_index import SearchIndexer
    from jobsys.lanes.reaper import ReaperService
    from jobsys.live import services as live_services
    from jobsys.metrics import endpoint as metrics_endpoint
    from jobsys.schedule.scheduler import Scheduler
    from jobsys.settings import from_env

    services: list[WorkerService] = []
    services.append(ReaperService(config))
    services.append(Scheduler(config))
    services.append(FailureMaintenance(config, from_env().home))
    services.append(SearchIndexer(config))
    services.extend(live_services.services(config))
    services.extend(metrics_endpoint.services(config))
    return services


def lifecycle_hooks(config: Config) -> list[Any]:
    """Observers of a worker process's life (``jobsys.lanes.lifecycle.LifecycleHook``):
    sd_notify READY/STATUS/WATCHDOG/STOPPING, and whatever else wants to know."""
    from jobsys.lanes.sdnotify import SdNotifyHook

    return [SdNotifyHook()]


async def run_worker(
    settings: Settings,
    *,
    lanes: list[str] | None = None,
    drain: bool = False,
    log_format: LogFormat = "text",
    concurrency_scale: float = 1.0,
) -> RuntimeResult:
    from jobsys.config.application import load_config
    from jobsys.db.connect import resolve
    from jobsys.errors import ConfigError
    from jobsys.failures.redaction import Redactor
    from jobsys.lanes import logs
    from jobsys.lanes.runtime import Runtime, scaled
    from jobsys.lanes.service import select_lanes, under_systemd

    if not 0 < concurrency_scale <= 100:
        raise UsageError("--concurrency-scale must be above 0 and at most 100")
    try:
        config = load_config(settings)
    except ConfigError as exc:
        raise under_systemd(exc, lanes) from exc
    selected = scaled(select_lanes(config, lanes), concurrency_scale)
    logs.configure(log_format, Redactor.for_config(config), debug=settings.debug)
    runtime = Runtime(
        config,
        resolve(settings, config).url,
        selected,
        drain=drain,
        services=worker_services(config),
        hooks=lifecycle_hooks(config),
        middlewares=worker_middlewares(config),
        home=settings.home,
    )
    result = await runtime.run()
    if result.abandoned_job_ids:
        # Threads of abandoned sync jobs cannot be stopped, and the interpreter would
        # wait for them forever at exit: leave now, the reaper takes over.
        logging.shutdown()
        streams.unbroken(sys.stderr).flush()
        os._exit(result.exit_code)
    return result
