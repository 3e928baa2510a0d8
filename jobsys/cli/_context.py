"""Shared CLI plumbing: the resolved settings and the configuration (loaded at the edge,
passed down to the services) on the Typer context, and the sync edge."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import typer

from jobsys.settings import Settings

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.errors import ConfigError

T = TypeVar("T")


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings), "the root callback sets the settings"
    return obj


def config(ctx: typer.Context, *, with_tasks: bool = False) -> Config:
    """The configuration, loaded here at the edge and handed down to the service; with
    ``with_tasks``, the application is imported and every task reference checked (what
    defers or runs tasks needs)."""
    return config_of(settings(ctx), with_tasks=with_tasks)


def read_config(ctx: typer.Context) -> Callable[[], Config]:
    """The loader of a command that reads the configuration only to find the database
    (issues, failures). With the database given (flag or environment) it runs on a
    broken configuration, but says so once on stderr: the operator must learn that
    defer and the worker refuse it. Without one, the loader raises as ever (exit 2)."""
    given = settings(ctx)
    if given.database_url is not None and (given.config_dir / "queues.yaml").exists():
        from jobsys.cli import _output
        from jobsys.errors import ConfigError

        try:
            config(ctx)
        except ConfigError as exc:
            _output.say(_invalid_warning(exc, "this command does not need it"))
    return lambda: config(ctx)


def _invalid_warning(exc: ConfigError, why_run: str) -> str:
    """The one line a command that runs on a broken configuration says about it."""
    more = len(exc.problems) - 1
    return (
        f"warning: the configuration is invalid: {exc.problems[0] if exc.problems else exc}"
        + (f" (and {more} more)" if more > 0 else "")
        + f"; {why_run}, but defer and the worker refuse it: run `jobsys config check`."
    )


def queues_config(ctx: typer.Context) -> Config:
    """The configuration of a command that needs only queues.yaml (pausing and resuming
    queues: the brake of an incident). While schedule.yaml alone is broken, it runs on
    queues.yaml and says so once on stderr; a broken queues.yaml refuses as ever."""
    from jobsys.config import load

    return _on_less(
        lambda: config(ctx),
        lambda: load(settings(ctx).config_dir, with_schedule=False),
        "queues.yaml is enough for this command",
    )


def checked_config(ctx: typer.Context, *, needs: str) -> Config:
    """The configuration of a command that reads the database only (the dashboard's
    snapshot), checked with the application's tasks as `jobsys config check` is, so
    that a refusal counts the same problems. Broken files refuse (exit 2), with every
    problem; when only the application is at fault (a task module that fails to
    import, a schedule entry naming no task), it runs on the files and says so once
    on stderr (``needs``: why the files are enough)."""
    return _on_less(lambda: config(ctx, with_tasks=True), lambda: config(ctx), needs)


def _on_less(full: Callable[[], Config], less: Callable[[], Config], why: str) -> Config:
    """``full()``; when it refuses but ``less()`` (a part of what it checks) loads, that,
    said once on stderr (``why``: why it is enough); when both refuse, ``full``'s refusal
    with every problem (exit 2). What :func:`queues_config` and :func:`checked_config`
    share."""
    from jobsys.errors import ConfigError

    try:
        return full()
    except ConfigError as exc:
        try:
            loaded = less()
        except ConfigError:
            raise exc from None
        from jobsys.cli import _output

        _output.say(_invalid_warning(exc, why))
        return loaded


def task_notes(ctx: typer.Context, task: str | None, args: tuple[str, ...] = ()) -> list[str]:
    """A note when ``--task`` names no task of the application, and one per ``--arg``
    key no task takes (the application imported to know). A broken configuration
    skips the check: listing does not depend on it."""
    if task is None and not args:
        return []
    from jobsys.errors import ConfigError
    from jobsys.tasks import unknown_arg_notes, unregistered_notes

    try:
        config(ctx, with_tasks=True)
    except ConfigError:
        return []
    return [*unregistered_notes(task), *(unknown_arg_notes(args) if args else [])]


def config_of(given: Settings, *, with_tasks: bool = False) -> Config:
    """The configuration of ``given`` settings, for the CLI's long-running screens: kept
    by ``load_config`` and read again only when a file changed."""
    from jobsys.config.application import load_config

    return load_config(given, with_tasks=with_tasks)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """The one sync edge: run an async service function to completion."""
    return asyncio.run(coro)


def jobsys_command() -> str:
    """How to type ``jobsys`` in another terminal: ``jobsys`` when that is what PATH
    finds, else the path of this installation's script (``.venv/bin/jobsys`` after
    ``make run``, which does not activate the virtualenv)."""
    script = Path(sys.executable).with_name("jobsys")
    found = shutil.which("jobsys")
    if not script.exists() or (found and Path(found).resolve() == script.resolve()):
        return "jobsys"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
