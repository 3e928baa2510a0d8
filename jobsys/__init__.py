"""jobsys: a Postgres-only background job system with an operator CLI.

The public API (documented in README, "Python API"):

- :func:`task` declares a task;
- :class:`AuthenticationError` / :class:`TransientError` classify failures;
- :func:`publish` announces a change on a live topic (``jobsys events``, dashboard).
- :func:`defer` / :func:`defer_many` (async) and :func:`defer_sync` /
  :func:`defer_many_sync` put jobs in their queues, optionally on the caller's own
  connection (inside its transaction).

This module stays import-light: nothing heavy (Procrastinate, psycopg, SQLAlchemy)
is imported until a command needs it.
"""

from typing import TYPE_CHECKING, Any

from jobsys.errors import AuthenticationError, TransientError
from jobsys.tasks import TaskSpec, task

if TYPE_CHECKING:
    from jobsys.jobs.defer import defer, defer_many, defer_many_sync, defer_sync

_LAZY = {"defer", "defer_many", "defer_many_sync", "defer_sync"}


def __getattr__(name: str) -> Any:
    # The defer API pulls in asyncio and the job planner: load it on first use, so
    # that `jobsys --help` and task modules importing `jobsys.task` stay fast.
    if name in _LAZY:
        from jobsys.jobs import defer as defer_module

        return getattr(defer_module, name)
    raise AttributeError(f"module 'jobsys' has no attribute {name!r}")


async def publish(
    topic: str, data: dict[str, Any] | None = None, *, connection: Any = None
) -> None:
    """Publish a live topic (ids and counts only): see :mod:`jobsys.live.api`."""
    from jobsys.live.api import publish as publish_live

    await publish_live(topic, data, connection=connection)


__all__ = [
    "AuthenticationError",
    "TaskSpec",
    "TransientError",
    "defer",
    "defer_many",
    "defer_many_sync",
    "defer_sync",
    "publish",
    "task",
]
