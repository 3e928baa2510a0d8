"""Every id argument of the CLI refuses a bad id as ``jobs`` does (``_options.id_argument``,
d42d790): jobsys's usage error naming the kind of id and the command that lists them,
exit 2, not Click's "'x' is not a valid int". Nothing here reaches the database."""

from __future__ import annotations

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
BAD_IDS = [(args, kind, listed_by) for kind, listed_by, commands in KINDS for args in commands]


@pytest.mark.parametrize(("args", "kind", "listed_by"), BAD_IDS)
def test_a_bad_id_names_its_kind_and_where_to_find_one(  # type: ignore[no-untyped-def]
    cli, args: list[str], kind: str, listed_by: str
) -> None:
    result = cli("--database-url", "postgresql://nobody@127.0.0.1:1/none", *args)
    thing = kind.split(" ", 1)[1]
    assert (result.exit_code, result.stdout, result.stderr) == (  # was Click's
        2,
        "",
        f"error: {args[-1]!r} is not {kind} id: {thing} ids are whole numbers from 1.\n"
        f"List them with `{listed_by}`.\n",
    )


def test_no_id_argument_is_left_to_click() -> None:
    """A new integer argument must be declared with ``id_argument`` too."""

    def arguments(command, path: str):  # type: ignore[no-untyped-def]
        # Typer carries its own Click (typer._click): its classes, read by their names.
        for param in command.params:
            if param.param_type_name == "argument":
                yield path, param
        for name, sub in getattr(command, "commands", {}).items():
            yield from arguments(sub, f"{path} {name}")

    left = [
        f"{path} {param.name}"
        for path, param in arguments(typer.main.get_command(app), "jobsys")
        if param.type.name == "int"
    ]
    assert left == []
