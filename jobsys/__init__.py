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

from typing import Any

from jobsys.errors import AuthenticationError, TransientError
from jobsys.jobs.defer import defer, defer_many, defer_many_sync, defer_sync
from jobsys.tasks import TaskSpec, task


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
