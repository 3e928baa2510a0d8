"""How a task function runs inside a lane: its effective timeout, enforced.

An async job past its timeout is cancelled and fails with
:class:`jobsys.errors.JobTimeoutError` (failure reason ``timeout``). A sync job runs
in a thread that cannot be cancelled: :func:`effective_timeout` tells the runtime's
watchdog when it is overdue, and the worker then stops taking jobs and exits
non-zero so its supervisor restarts it (the reaper handles the abandoned job).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobsys.engine.context import JOB_QUEUE
from jobsys.errors import JobTimeoutError

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.engine.api import App
    from jobsys.tasks import TaskSpec


def effective_timeout(
    spec: TaskSpec | None, config: Config | None, queue: str | None = None
) -> float | None:
    """The task's own timeout, else the timeout of the lane serving ``queue`` (the
    job's queue; default: the task's declared queue), else None (no config: no limit).
    The worker, its sync watchdog and the reaper all use this one rule."""
    if spec is not None and spec.timeout_seconds is not None:
        return spec.timeout_seconds
    queue = queue or (spec.queue if spec is not None else None)
    if config is None or queue is None:
        return None
    lane = config.lane_of(queue)
    return config.lanes[lane].timeout_seconds if lane is not None else None


def runnable(spec: TaskSpec, config: Config | None) -> Callable[..., Any]:
    """The function Procrastinate registers for ``spec``: async ones under the timeout
    of the lane running the job (read per call from :data:`JOB_QUEUE`)."""
    func = spec.func
    if not spec.is_async or (config is None and spec.timeout_seconds is None):
        return func

    @functools.wraps(func)
    async def run_with_timeout(*args: Any, **kwargs: Any) -> Any:
        timeout = effective_timeout(spec, config, JOB_QUEUE.get())
        if timeout is None:
            return await func(*args, **kwargs)
        try:
            async with asyncio.timeout(timeout) as limit:
                return await func(*args, **kwargs)
        except TimeoutError:
            if limit.expired():
                raise JobTimeoutError(
                    f"{spec.name} ran past its timeout of {timeout:g} s and was cancelled"
                ) from None
            raise  # the task's own TimeoutError: its failure, not ours

    return run_with_timeout


def build_engine_app(
    url: str, config: Config | None = None, *, min_size: int = 1, max_size: int = 10
) -> App:
    """A Procrastinate App on ``url`` with every registered jobsys task attached.

    Its pool hands out autocommit connections (see ``jobsys.engine.pool``): wrap
    multi-statement work in ``async with conn.transaction():``.
    """
    from jobsys import tasks as task_registry
    from jobsys.engine.app import build_app

    app = build_app(url, min_size=min_size, max_size=max_size)
    for spec in task_registry.registry().values():
        register_on(app, spec, config)
    return app


def register_on(app: Any, spec: TaskSpec, config: Config | None = None) -> None:
    """Register ``spec`` on a Procrastinate app, with its timeout (:func:`runnable`)
    and its failure-kind retry policy (``failures.policy``)."""
    from jobsys.engine.app import register_task

    register_task(
        app,
        runnable(spec, config),
        name=spec.name,
        queue=spec.queue,
        priority=spec.priority,
        pass_context=spec.pass_context,
        retry=retry_for(spec, config),
    )


def retry_for(spec: TaskSpec, config: Config | None) -> Any:
    """The failure-kind retry policy (authentication never, transient with backoff)."""
    if config is None:
        return False
    from jobsys.failures.policy import retry_strategy

    return retry_strategy(spec, config)
