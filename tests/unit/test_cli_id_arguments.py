"""Every id argument of the CLI refuses a bad id as ``jobs`` does (``_options.id_argument``,
d42d790), and so does every id option (``_options.id_option``: ``failures list --issue``,
``--before``, ``retry --all --issue``): jobsys's usage error naming the kind of id and
the command that lists them, exit 2, not Click's "'x' is not a valid int". Nothing here
reaches the database."""

from __future__ import annotations

import re

import pytest
import typer

from jobsys.cli.main import app

# (the kind of id, the command that lists them, commands given a bad one as last argument)
KINDS = [
    ("a job", "jobsys jobs list", [["jobs", "show", "abc"]]),
    (
        "a failure",
        "jobsys failures list",
        [["failures", "show", "abc"], ["failures", "show", "0"], ["retry", "12", "x"]],
    ),
    (
        "an issue",
        "jobsys issues list",
        [["issues", verb, "1.5"] for verb in ("show", "resolve", "mute", "reopen", "retry")],
    ),
    (
        "a pipeline",
        "jobsys pipelines list",
        [["pipelines", "show", "p1"], ["pipelines", "cancel", "0"]],
    ),
    ("a fan-out run", "jobsys fanout list", [["fanout", "show", "last"]]),
]
# (the option, the kind of id, the command that lists them, commands given it with a bad id)
OPTIONS = [
    ("--issue", "an issue", "jobsys issues list", ["failures", "list"]),
    ("--issue", "an issue", "jobsys issues list", ["retry", "--all"]),
    ("--before", "a failure", "jobsys failures list", ["failures", "list"]),
]
# (the command line, what the message names first, the kind of id, where to find one)
BAD_IDS = [
    *((args, "", kind, listed_by) for kind, listed_by, commands in KINDS for args in commands),
    *(
        ([*command, option, bad], f"{option} ", kind, listed_by)
        for option, kind, listed_by, command in OPTIONS
        for bad in ("x", "0", "-3", "1.5")
    ),
]


@pytest.mark.parametrize(("args", "named", "kind", "listed_by"), BAD_IDS)
def test_a_bad_id_names_its_kind_and_where_to_find_one(  # type: ignore[no-untyped-def]
    cli, args: list[str], named: str, kind: str, listed_by: str
) -> None:
    result = cli("--database-url", "postgresql://nobody@127.0.0.1:1/none", *args)
    thing = kind.split(" ", 1)[1]
    assert (result.exit_code, result.stdout, result.stderr) == (  # was Click's
        2,
        "",
        f"error: {named}{args[-1]!r} is not {kind} id: {thing} ids are whole numbers from 1.\n"
        f"List them with `{listed_by}`.\n",
    )


def _params(command, path: str):  # type: ignore[no-untyped-def]
    """Every parameter of the command tree, with the command it belongs to."""
    # Typer carries its own Click (typer._click): its classes, read by their names.
    for param in command.params:
        yield path, param
    for name, sub in getattr(command, "commands", {}).items():
        yield from _params(sub, f"{path} {name}")


def test_no_id_argument_is_left_to_click() -> None:
    """A new integer argument must be declared with ``id_argument`` too."""
    left = [
        f"{path} {param.name}"
        for path, param in _params(typer.main.get_command(app), "jobsys")
        if param.param_type_name == "argument" and param.type.name == "int"
    ]
    assert left == []


def test_no_id_option_is_left_to_click() -> None:
    """An integer option that takes an id (its help says so) must be declared with
    ``id_option``: counts and sizes (``--limit``, ``--priority``) stay integers."""
    left = [
        f"{path} {param.opts[0]}"
        for path, param in _params(typer.main.get_command(app), "jobsys")
        if param.param_type_name == "option"
        and param.type.name in ("int", "integer", "int range", "integer range")
        and re.search(r"\bids?\b", f"{param.name} {param.help}", re.IGNORECASE)
    ]
    assert left == []
