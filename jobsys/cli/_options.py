"""Option declarations shared by every command (sqlite-utils' ``output_options``).

An option that means the same in several commands (``--json``, ``--yes``, ``--dry-run``
counting a sample, ``--everything``) is declared here once, and so is the form every
time option takes (:func:`time_option`). A set of options several
commands take together (the jobs filters, the worker listing) is declared once as a
function and given to each command with :func:`option_group`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer

from jobsys.errors import UsageError, parse_id

F = TypeVar("F", bound=Callable[..., Any])

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
WideOpt = Annotated[
    bool,
    typer.Option("--wide", "-w", help="Every column, complete values and absolute times (UTC)."),
]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
#: ``--dry-run`` of a bulk action (jobs, queues): what the change would touch.
DryRunOpt = Annotated[
    bool, typer.Option("--dry-run", help="Count and show a sample; change nothing.")
]
EverythingOpt = Annotated[
    bool, typer.Option("--everything", help="Allow --all without any filter.")
]
#: ``--limit`` of a list shown newest first (the default is the command's).
NewestLimitOpt = Annotated[
    int, typer.Option("--limit", "-n", help="At most this many, newest first.")
]

#: What a time option takes: :func:`jobsys.timespec.parse_time` reads every one.
TIME_FORMS = "30m, 2h, 7d (that long ago) or an ISO-8601 time"


def time_option(flag: str, what: str) -> Any:
    """A time option (``--since``, ``--until``, ``--before``): its help says ``what`` the
    time bounds, then the one form every such option takes (:data:`TIME_FORMS`)."""
    return typer.Option(flag, help=f"{what}: {TIME_FORMS}.")


def id_argument(thing: str, listed_by: str, *, help: str, metavar: str = "ID") -> Any:
    """A positional id of a ``thing`` (``job``, ``failure``, ``issue``...), or each of
    several (``list[int]``). One that is not a whole number from 1 is refused as jobsys
    refuses any bad input (``error: 'abc' is not a job id…``, exit 2), naming it and
    the command that lists them (``listed_by``), not with Click's "'abc' is not a valid
    int". Every id argument of the CLI is declared with it; its usage reads ``ID``
    (``RUN``...) as the README writes it, not the parameter's name."""
    return typer.Argument(
        help=help, parser=_id_parser(thing, listed_by), show_default=False, metavar=metavar
    )


def id_option(flag: str, thing: str, listed_by: str, *, help: str) -> Any:
    """An option taking the id of a ``thing`` (``failures list --issue``, ``--before``),
    refused as :func:`id_argument` refuses a bad one, with the option named first
    (``error: --issue 'x' is not an issue id…``, exit 2). Every id option of the CLI
    is declared with it."""
    return typer.Option(flag, help=help, parser=_id_parser(thing, listed_by, flag), metavar="ID")


def _id_parser(thing: str, listed_by: str, flag: str | None = None) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        return parse_id(raw, thing, listed_by=listed_by, flag=flag)

    return parse


def option_group(**groups: Callable[..., Any]) -> Callable[[F], F]:
    """Give a command a set of options declared once: each keyword names one of the
    command's parameters and a function whose parameters are the options (Typer
    ``Annotated`` declarations with their defaults). The command line and ``--help``
    show those options where the parameter stands; the command receives what the
    function returns for the values given."""

    def decorate(command: F) -> F:
        own = inspect.signature(command)
        members = {name: _parameters(build) for name, build in groups.items()}
        parameters: list[inspect.Parameter] = []
        for parameter in own.parameters.values():
            parameters += members.get(parameter.name) or _parameters(command, parameter.name)

        @functools.wraps(command)
        def run(*args: Any, **kwargs: Any) -> Any:
            for name, options in members.items():
                values = {option.name: kwargs.pop(option.name) for option in options}
                kwargs[name] = groups[name](**values)
            return command(*args, **kwargs)

        run.__signature__ = own.replace(parameters=parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run  # type: ignore[return-value]

    return decorate


def _parameters(function: Callable[..., Any], only: str | None = None) -> list[inspect.Parameter]:
    """``function``'s parameters (or the one named ``only``) with their annotations as
    objects: ``from __future__ import annotations`` leaves strings, which name what
    the function's module defines."""
    found = []
    for parameter in inspect.signature(function).parameters.values():
        if only is not None and parameter.name != only:
            continue
        annotation = parameter.annotation
        if isinstance(annotation, str):
            annotation = eval(annotation, function.__globals__)
        found.append(parameter.replace(annotation=annotation))
    return found


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given (command line or environment), not left at
    its default. Typer carries its own Click (``typer._click``): its enum, read by name."""
    source = ctx.get_parameter_source(name)
    return source is not None and source.name != "DEFAULT"


#: A listing with the options given on the command line, run on a command's context.
Listing = Callable[[typer.Context], None]


def listing_commands(app: typer.Typer, options: Callable[..., Listing], *, help: str) -> None:
    """Make ``jobsys X`` alone and ``jobsys X list`` the same listing, with the options
    ``options`` declares (its parameters) and builds (what it returns). Every other
    listing is ``X list`` (jobs, failures, issues, schedule, fanout, pipelines): an
    operator types ``queues list`` and ``workers list`` too. ``help`` is both
    commands' help: one text, as they print one listing. The options given to ``X``
    before a subcommand (``X --json list``) are refused (exit 2), not dropped."""

    def group(ctx: typer.Context, *, listing: Listing) -> None:
        if ctx.invoked_subcommand is None:
            listing(ctx)
            return
        # ``X --json list`` would parse --json here and drop it (a table, exit 0, where a
        # script wanted JSON): options given before the subcommand are refused instead.
        given = [
            param.opts[0] for param in ctx.command.params if param.name and _given(ctx, param.name)
        ]
        if given:
            sub = f"{ctx.command_path} {ctx.invoked_subcommand}"
            raise UsageError(
                f"{', '.join(given)} given before `{ctx.invoked_subcommand}`, where it "
                "applies to nothing.",
                hint=f"Options go after the subcommand (`{sub} --help` lists them).",
            )

    def list_(ctx: typer.Context, *, listing: Listing) -> None:
        listing(ctx)

    group.__doc__ = list_.__doc__ = help
    app.callback()(option_group(listing=options)(group))
    app.command("list")(option_group(listing=options)(list_))
