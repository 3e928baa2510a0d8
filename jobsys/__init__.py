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

if TYPE_CHECKING:
    from jobsys.jobs.defer import defer, defer_many, defer_many_sync, defer_sync
    from jobsys.tasks import TaskSpec, task

_LAZY = {"defer", "defer_many", "defer_many_sync", "defer_sync"}
_TASKS = {"task", "TaskSpec"}


def __getattr__(name: str) -> Any:
    # The defer API pulls in asyncio and the job planner: load it on first use, so
    # that `jobsys --help` and task modules importing `jobsys.task` stay fast. The
    # task decorator (and the unique-job rules behind it) too: every command imports
    # this package, and only those that check or run tasks declare any.
    if name in _TASKS:
        from jobsys import tasks

        value = getattr(tasks, name)
        globals()[name] = value
        return value
    if name in _LAZY:
        # Built once (a wrapper built per attribute access cost each defer about
        # 10 µs); it looks the function up when called.
        value = _configured_first(name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'jobsys' has no attribute {name!r}")


def _configure_from_environment() -> None:
    """This module is the application's edge: the first defer in a process that nothing
    configured (not a worker, no ``configure``) loads the environment's configuration
    (``JOBSYS_*``, the config folder, the task modules) once, here, and hands it down."""
    from jobsys.jobs import defer as defer_module

    if not defer_module.configured():
        from jobsys.config.application import load_config
        from jobsys.settings import from_env

        defer_module.configure(load_config(from_env()))


def _configured_first(name: str) -> Any:
    import functools
    import inspect

    from jobsys.jobs import defer as defer_module

    func = getattr(defer_module, name)
    if inspect.iscoroutinefunction(func):

        @functools.wraps(func)
        async def deferring(*args: Any, **kwargs: Any) -> Any:
            if not defer_module.configured():
                _configure_from_environment()
            return await getattr(defer_module, name)(*args, **kwargs)

        return deferring

    @functools.wraps(func)
    def deferring_sync(*args: Any, **kwargs: Any) -> Any:
        if not defer_module.configured():
            _configure_from_environment()
        return getattr(defer_module, name)(*args, **kwargs)

    return deferring_sync


async def publish(
    topic: str, data: dict[str, Any] | None = None, *, connection: Any = None
) -> None:
    """Publish a live topic (ids and counts only): see :mod:`jobsys.live.api`."""
    from jobsys.live.api import publish as publish_live

    await publish_live(topic, data, connection=connection, database_url=_database_url)


_url_cache: str | None = None


def _database_url() -> str:
    """The database a publish outside a worker, with no connection given, goes to: the
    environment's configuration, loaded here at the application's edge, once."""
    global _url_cache
    if _url_cache is None:
        from jobsys.config.application import load_config
        from jobsys.db.connect import resolve
        from jobsys.settings import from_env

        settings = from_env()
        _url_cache = resolve(settings, load_config(settings, with_tasks=False)).url
    return _url_cache


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
