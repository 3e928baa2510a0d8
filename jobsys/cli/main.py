"""The ``jobsys`` command: global options, command groups, and the one place that
maps errors to exit codes (see README, "Exit codes").

Only Typer is imported at start; each command imports what it needs, so
``jobsys --help`` stays fast.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from jobsys import errors
from jobsys.cli import _pipe
from jobsys.cli import config as config_cmd
from jobsys.cli import dashboard as dashboard_cmd
from jobsys.cli import db as db_cmd
from jobsys.cli import defer as defer_cmd
from jobsys.cli import demo as demo_cmd
from jobsys.cli import events as events_cmd
from jobsys.cli import failures as failures_cmd
from jobsys.cli import fanout as fanout_cmd
from jobsys.cli import issues as issues_cmd
from jobsys.cli import jobs as jobs_cmd
from jobsys.cli import metrics as metrics_cmd
from jobsys.cli import pipelines as pipelines_cmd
from jobsys.cli import queues as queues_cmd
from jobsys.cli import retry as retry_cmd
from jobsys.cli import schedule as schedule_cmd
from jobsys.cli import systemd as systemd_cmd
from jobsys.cli import web as web_cmd
from jobsys.cli import worker as worker_cmd
from jobsys.cli import workers as workers_cmd
from jobsys.settings import from_env, split_modules


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="jobsys",
        cls=_Root,
        help="jobsys: background jobs on PostgreSQL alone, for the people who run them.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,  # locals in tracebacks can hold a database password
        add_completion=False,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


#: The headings of ``jobsys --help``, in the README command reference's order.
HEADINGS = (
    "Set up",
    "Run work",
    "Workers and queues",
    "Schedule",
    "Failures and retry",
    "Pipelines and jobs",
    "Watch",
    "Demo and web console",
)
SETUP, RUN, OPERATE, SCHEDULE, FAILURES, JOBS, WATCH, DEMO_WEB = HEADINGS

Entry = tuple[str, Callable[[typer.Typer], object]]


def _group(name: str, sub: typer.Typer, heading: str, *, bare_lists: bool = False) -> Entry:
    """A command group; with ``bare_lists`` the group alone runs (``jobsys queues``), else
    it prints its help."""
    options: dict[str, Any] = {} if bare_lists else {"no_args_is_help": True}
    return name, lambda app: app.add_typer(sub, name=name, rich_help_panel=heading, **options)


def _command(name: str, func: Callable[..., Any], heading: str, **options: Any) -> Entry:
    return name, lambda app: app.command(name, rich_help_panel=heading, **options)(func)


#: Every command and group in the order of ``jobsys --help``, which is the order of the
#: README's command reference, each under its heading: (name, how to add it).
_ENTRIES: tuple[Entry, ...] = (
    _group("db", db_cmd.app, SETUP),
    _group("config", config_cmd.app, SETUP),
    _group("systemd", systemd_cmd.app, SETUP),
    _command("worker", worker_cmd.worker, RUN),
    _command("defer", defer_cmd.defer, RUN),
    _group("workers", workers_cmd.app, OPERATE, bare_lists=True),
    _group("queues", queues_cmd.app, OPERATE, bare_lists=True),
    _group("schedule", schedule_cmd.app, SCHEDULE),
    _group("fanout", fanout_cmd.app, SCHEDULE),
    _group("failures", failures_cmd.app, FAILURES),
    _group("issues", issues_cmd.app, FAILURES),
    _command("retry", retry_cmd.retry, FAILURES),
    _group("pipelines", pipelines_cmd.app, JOBS),
    _group("jobs", jobs_cmd.app, JOBS),
    _command("events", events_cmd.events, WATCH),
    _command("dashboard", dashboard_cmd.dashboard, WATCH),
    _command("top", dashboard_cmd.dashboard, WATCH, help="Alias of `jobsys dashboard`."),
    _command("metrics", metrics_cmd.metrics, WATCH),
    _group("demo", demo_cmd.app, DEMO_WEB),
    _command("web", web_cmd.web, DEMO_WEB),
    _command("web-user", web_cmd.web_user, DEMO_WEB),
)


class _Root(typer.core.TyperGroup):
    """``jobsys --help``: the commands in ``_ENTRIES``' order (Typer lists single commands
    before groups), under their headings (``rich_help_panel``; the plain help ignores it)."""

    def list_commands(self, ctx: Any) -> list[str]:
        order = {name: i for i, (name, _) in enumerate(_ENTRIES)}
        return sorted(self.commands, key=lambda name: order.get(name, len(order)))

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        shown = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        commands = [(name, cmd) for name, cmd in shown if cmd is not None and not cmd.hidden]
        if not commands:
            return
        widest = max(len(name) for name, _ in commands)
        limit = formatter.width - 6 - widest
        panels: dict[str, list[tuple[str, str]]] = {}
        for name, cmd in commands:
            panel = getattr(cmd, "rich_help_panel", None) or "Commands"
            # Padded to the widest name: one column of help across the headings.
            row = (name.ljust(widest), cmd.get_short_help_str(limit))
            panels.setdefault(panel, []).append(row)
        for panel, rows in panels.items():
            with formatter.section(panel):
                formatter.write_dl(rows)


issues_cmd.app.command("retry")(retry_cmd.issues_retry)
#: The root options that take a value (the command's name comes after them).
_VALUED = ("--database-url", "--config-dir", "--app")


def _setting(flag: str, help: str) -> Any:
    """A root option that a ``JOBSYS_*`` environment variable can give instead
    (``--config-dir``: ``JOBSYS_CONFIG_DIR``), named in ``--help``."""
    envvar = "JOBSYS_" + flag.removeprefix("--").replace("-", "_").upper()
    return typer.Option(flag, envvar=envvar, help=help, show_envvar=True)


def root(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        _setting(
            "--database-url", "PostgreSQL URL. Default: the embedded server under JOBSYS_HOME."
        ),
    ] = None,
    config_dir: Annotated[
        Path | None,
        _setting("--config-dir", "Folder with queues.yaml and schedule.yaml. Default: ./config."),
    ] = None,
    app_modules: Annotated[
        str | None,
        _setting(
            "--app", "Comma-separated modules defining your tasks. Default: app.modules, else demo."
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", "-v", help="Show tracebacks and debug logs.")
    ] = False,
) -> None:
    def source(name: str) -> str:
        # By name: Typer vendors click privately, so its enum is not importable.
        given = ctx.get_parameter_source(name)
        return "env" if given is not None and given.name == "ENVIRONMENT" else "flag"

    settings = from_env().with_overrides(
        database_url=database_url,
        config_dir=config_dir.expanduser().resolve() if config_dir else None,
        app_modules=split_modules(app_modules),
        debug=debug or None,
        database_url_source=source("database_url"),
        config_dir_source=source("config_dir"),
    )
    ctx.obj = settings


def build(only: str | None = None) -> typer.Typer:
    """The ``jobsys`` app; with ``only``, just that command or group under the root
    options. Typer turns every registered command into a click command on each run
    (their signatures read with ``get_type_hints``: ~0.1 s of a read command's 0.5 s
    on the loaded 2-core machine), so a run builds only the one it was asked for."""
    app = _new_app()
    app.callback()(root)
    for name, add in _ENTRIES:
        if only is None or name == only:
            add(app)
    return app


def command_name(argv: list[str]) -> str | None:
    """The command or group ``argv`` asks for, when it is one of jobsys's (else None:
    help, a typo to suggest for, or no command)."""
    names = {name for name, _ in _ENTRIES}
    args = iter(argv)
    for arg in args:
        if arg in _VALUED:
            next(args, None)
        elif not arg.startswith("-"):
            return arg if arg in names else None
    return None


app = build()


def main(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (tests call this in-process). A reader of
    stdout that goes away follows one rule for every command (``_pipe``): exit 141 in
    silence, unless a change was committed."""
    try:
        with _pipe.guarded():
            status = _main(argv)
    except _pipe.OutputClosed:
        return _pipe.EXIT_OUTPUT_CUT
    return _pipe.exit_status(status)


def _main(argv: list[str] | None) -> int:
    debug = "--debug" in (argv or sys.argv[1:]) or "-v" in (argv or sys.argv[1:])
    try:
        # Without standalone mode, click returns typer.Exit's code instead of raising.
        argv = sys.argv[1:] if argv is None else argv
        rv = build(command_name(argv))(args=argv, prog_name="jobsys", standalone_mode=False)
        if isinstance(rv, int):
            return rv
    except errors.JobsysError as exc:
        from jobsys.cli import _output

        if debug:
            import traceback

            traceback.print_exc()
        _output.error(exc.message, exc.hint)
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.TyperException as exc:
        show = getattr(exc, "show", None)
        if show is not None:
            show()
        else:
            sys.stderr.write(f"error: {exc}\n")
        return int(getattr(exc, "exit_code", errors.EXIT_USAGE))
    except typer.Abort:
        sys.stderr.write("aborted\n")
        return errors.EXIT_FAILED
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        return 130
    except Exception as exc:
        if debug:
            import traceback

            traceback.print_exc()
        from jobsys.cli import _output
        from jobsys.db.url import scrub

        message = f"internal error: {type(exc).__name__}: {exc}"
        _output.error(
            scrub(message, *_known_urls(argv or [])), "Run again with --debug for the traceback."
        )
        return errors.EXIT_FAILED
    return errors.EXIT_OK


def _given(argv: list[str], flag: str) -> list[str]:
    """The values of ``flag`` in ``argv`` (``--flag VALUE`` and ``--flag=VALUE``)."""
    import itertools

    values = [value for name, value in itertools.pairwise(argv) if name == flag]
    return values + [a.split("=", 1)[1] for a in argv if a.startswith(f"{flag}=")]


def _known_urls(argv: list[str]) -> list[str | None]:
    """Every database URL the command may have used, for scrubbing their passwords from
    an unexpected error: the flag's, the environment's and queues.yaml's."""
    settings = from_env()
    urls: list[str | None] = [settings.database_url, *_given(argv, "--database-url")]
    try:
        from pathlib import Path

        from jobsys.config.application import load_config

        dirs = _given(argv, "--config-dir")
        if dirs:
            settings = settings.with_overrides(config_dir=Path(dirs[-1]))
        urls.append(load_config(settings, with_tasks=False).queues.database.url)
    except Exception:  # a broken configuration must not hide the error being reported
        pass
    return urls


def run() -> None:
    sys.exit(main())
