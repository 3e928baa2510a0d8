"""jobsys: a Postgres-only background job system with an operator CLI.

The public API (documented in README, "Python API"):

- :func:`task` declares a task;
- :class:`AuthenticationError` / :class:`TransientError` classify failures.

This module stays import-light: nothing heavy (Procrastinate, psycopg, SQLAlchemy)
is imported until a command needs it.
"""

from jobsys.errors import AuthenticationError, TransientError
from jobsys.tasks import TaskSpec, task

__all__ = ["AuthenticationError", "TaskSpec", "TransientError", "task"]
