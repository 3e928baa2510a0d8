"""``option_group``: a set of options declared once, given to several commands, shows
in each command's help where its parameter stands and reaches the command as what
the group's function builds (``jobs list/delete/cancel`` filters, ``workers``)."""

from __future__ import annotations

from typing import Annotated

import pytest
import typer
from typer.testing import CliRunner

from jobsys.cli._options import JsonOpt, option_group


def window(
    since: Annotated[str | None, typer.Option("--since", help="From then.")] = None,
    until: Annotated[str | None, typer.Option("--until", help="Until then.")] = None,
) -> tuple[str | None, str | None]:
    return (since, until)


app = typer.Typer(add_completion=False)
seen: list[object] = []


@app.command()
@option_group(span=window)
def show(
    name: str,
    first: Annotated[bool, typer.Option("--first", help="First one.")] = False,
    *,
    span: tuple[str | None, str | None],
    json: JsonOpt = False,
) -> None:
    seen.append((name, first, span, json))


def test_the_group_reaches_the_command_built() -> None:
    seen.clear()
    result = CliRunner().invoke(app, ["n", "--until", "2h", "--json"])
    assert result.exit_code == 0, result.output
    assert seen == [("n", False, (None, "2h"), True)]


def test_the_group_shows_where_its_parameter_stands() -> None:
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "100", "TERM": "dumb"})
    flags = [w for w in result.output.split() if w.startswith("--")]
    assert flags == ["--first", "--since", "--until", "--json", "--help"]


def test_the_no_filter_refusal_names_only_options_its_command_has() -> None:
    # `jobs cancel --all` suggested --before, which only `jobs delete` takes.
    from typer.main import get_command

    from jobsys.cli.main import app
    from jobsys.jobs.bulk import filter_options

    jobs = get_command(app).commands["jobs"]  # type: ignore[attr-defined]
    for action, name in (("jobs_cancel", "cancel"), ("jobs_delete", "delete")):
        options = {o for p in jobs.commands[name].params for o in p.opts}
        assert set(filter_options(action)) <= options, (action, options)
    assert "--before" in filter_options("jobs_delete")


def test_every_time_form_the_help_shows_is_read() -> None:
    """The time options' help (``--since``, ``--until``, ``--before``) shows forms an
    operator types as shown: each must parse. It said ``7d ago``, which parse_time
    refuses (exit 2)."""
    import re
    from datetime import UTC, datetime

    from jobsys.cli._options import TIME_FORMS
    from jobsys.timespec import parse_time

    durations = re.sub(r"\s*\([^)]*\)", "", TIME_FORMS.split(" or ")[0]).split(", ")
    now = datetime(2026, 12, 6, 12, tzinfo=UTC)
    assert durations == ["30m", "2h", "7d"]
    for form in durations:
        assert parse_time(form, "--since", now) < now


def test_issues_retry_help_says_it_asks_without_yes(capsys) -> None:  # type: ignore[no-untyped-def]
    """`issues retry --help` said it asks only while the service its failures depend on
    has an open outage; it previews and asks whenever --yes is not given, as
    `retry --all` does (README, Retry), so an operator reading the help was surprised by
    the prompt, or a cron job by 'not confirmed' (operator walk-through)."""
    import re

    from jobsys.cli.main import main

    assert main(["issues", "retry", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert re.search(r"Without --yes it previews the verdicts and asks", text), text


@pytest.mark.parametrize(
    ("args", "given", "sub"),
    [
        (["queues", "--json", "list"], "--json", "list"),
        (["workers", "--wide", "--json", "list"], "--wide, --json", "list"),
        (["queues", "--json", "pause", "q"], "--json", "pause"),
    ],
)
def test_listing_options_before_a_subcommand_are_refused(  # type: ignore[no-untyped-def]
    cli, args: list[str], given: str, sub: str
) -> None:
    """``queues --json list`` used to drop --json: a table, exit 0, where a script wanted
    JSON. Now a usage error before the database is reached."""
    result = cli("--database-url", "postgresql://nobody@127.0.0.1:1/none", *args)
    group = args[0]
    assert (result.exit_code, result.stdout, result.stderr) == (
        2,
        "",
        f"error: {given} given before `{sub}`, where it applies to nothing.\n"
        f"Options go after the subcommand (`jobsys {group} {sub} --help` lists them).\n",
    )


def test_queues_list_help_names_every_column_queues_shows() -> None:
    """``queues list`` named fewer columns than ``queues`` (review3 LOW 3), yet both
    print the same listing: the two take one help text."""
    from jobsys.cli.main import app as jobsys

    group = typer.main.get_command(jobsys).commands["queues"]  # type: ignore[attr-defined]
    text = " ".join(group.commands["list"].help.split())
    for column in ("concurrency", "waiting", "scheduled", "running", "failures in the last hour",
                   "oldest waiting job", "pause", "held"):  # fmt: skip
        assert column in text
