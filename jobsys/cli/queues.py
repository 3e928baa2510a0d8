"""``jobsys queues``: every configured queue, its lane, how busy it is, and whether it
is paused; ``queues pause`` / ``queues resume`` for a queue, a lane, or all of them;
``queues purge NAME`` cancels every waiting job of a queue. ``queues list`` is
``jobsys queues`` alone, as ``workers list`` is ``jobsys workers``."""

from __future__ import annotations

import functools
from typing import Annotated, Any

import typer

from jobsys.cli._context import queues_config, run, settings
from jobsys.cli._options import DryRunOpt, JsonOpt, Listing, WideOpt, YesOpt, listing_commands
from jobsys.cli._table import Col

LIST_COLUMNS = (
    Col("queue", priority=0),
    Col("lane", priority=1),
    Col("waiting", kind="number", priority=0),
    Col("running", kind="number", priority=0),
    Col("paused", kind="text", priority=1, min=12, want=24),
    Col("held", kind="text", priority=1, min=12, want=32),
    Col("concurrency", kind="number", priority=3),
    Col("scheduled", kind="number", priority=3),
    Col("failed_last_hour", "failed 1h", kind="number", priority=2),
    Col("oldest_wait_seconds", "oldest wait", kind="duration", priority=2),
)

app = typer.Typer(
    help="Queues: how busy each is; pause or resume a queue, a lane or all; purge one.",
    invoke_without_command=True,
)

NameArg = Annotated[
    str | None,
    typer.Argument(metavar="NAME", help="A queue, or a lane (all its queues).", show_default=False),
]
AllOpt = Annotated[bool, typer.Option("--all", help="Every queue of every lane.")]


def listing_options(wide: WideOpt = False, json: JsonOpt = False) -> Listing:
    """The options of ``jobsys queues`` and ``jobsys queues list``: the listing asked for."""
    return functools.partial(list_queues, wide=wide, json=json)


def list_queues(ctx: typer.Context, *, wide: bool, json: bool) -> None:
    from jobsys.cli import _output
    from jobsys.config.application import load_config_tasks_if_they_load
    from jobsys.lanes import service

    rows = run(service.queue_overview(settings(ctx), load_config_tasks_if_they_load(settings(ctx))))
    if json:
        _output.emit_list(rows)
        return
    # A fitted table has no room for who paused, why and for how long (story 9): its
    # cell says how long is left, and each pause gets a line of its own under the table.
    fitted = _output.fits_terminal(wide=wide)
    _output.table(
        [{**row, "paused": _paused(row["pause"], fitted), "held": _held(row)} for row in rows],
        LIST_COLUMNS,
        wide=wide,
    )
    for row in rows if fitted else ():
        if row["pause"]:
            _output.line(f"{row['queue']}: {row['pause']['why']}")


listing_commands(
    app,
    listing_options,
    help="""Each queue with its lane, concurrency, jobs waiting, scheduled, running,
    failures in the last hour, the age of the oldest waiting job, its pause, and the
    keys a rate or concurrency limit holds (``held``); `jobsys queues` alone is
    `jobsys queues list`.""",
)


def _paused(pause: dict[str, Any] | None, fitted: bool) -> str | None:
    """The ``paused`` cell: why, by whom, until when; fitted, only the time left
    (``27m left``, or ``yes`` for a pause until resumed)."""
    if pause is None or not fitted:
        return pause["why"] if pause else None
    from datetime import UTC, datetime

    from jobsys.cli._table import relative

    now = datetime.now(UTC)
    if pause["until"] is None or pause["until"] <= now:
        return "yes"
    return relative(pause["until"], now).removeprefix("in ") + " left"


def _held(row: dict[str, Any]) -> str | None:
    """The first key a limit holds, and how many more."""
    held = row["held"]
    if not held:
        return None
    more = f" (+{len(held) - 1} more keys)" if len(held) > 1 else ""
    return held[0]["why"] + more


@app.command()
def pause(
    ctx: typer.Context,
    name: NameArg = None,
    for_: Annotated[
        str | None,
        typer.Option(
            "--for", help="Resume by itself after this long (30m, 2h).", metavar="DURATION"
        ),
    ] = None,
    reason: Annotated[
        str | None, typer.Option("--reason", help="Why: shown wherever the queue is shown.")
    ] = None,
    every: AllOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Stop every worker on every host from starting jobs of NAME (a queue or a lane)
    within a second. Waiting jobs stay waiting, running jobs finish, new jobs are still
    enqueued. --all asks first unless --yes."""
    from jobsys.cli import _output
    from jobsys.flow import service

    loaded = queues_config(ctx)
    if every:
        service.targets(loaded, name, every=True)  # refuse a name beside --all first
        count = len(loaded.all_queues)
        if not yes:
            _output.confirm(
                f"Pause all {count} queues of {len(loaded.lanes)} lanes? No job starts until "
                "`jobsys queues resume --all`"
            )
    result = run(
        service.set_paused(
            settings(ctx), loaded, name, paused=True, every=every, for_=for_, reason=reason
        )
    )
    _report(result, json)


@app.command()
def resume(
    ctx: typer.Context, name: NameArg = None, every: AllOpt = False, json: JsonOpt = False
) -> None:
    """Let workers start jobs of NAME (a queue or a lane) again, within a second."""
    from jobsys.flow import service

    _report(
        run(service.set_paused(settings(ctx), queues_config(ctx), name, paused=False, every=every)),
        json,
    )


def _report(result: dict[str, Any], json: bool) -> None:
    from jobsys.cli import _output
    from jobsys.cli._pipe import committed

    committed()
    if json:
        _output.emit_json(result)
        return
    paused = result["action"] == "pause"
    what = "paused" if paused else "resumed"
    if result["changed"]:
        line = f"{what} {', '.join(result['changed'])}"
        if paused and result["until"] is not None:
            line += f" until {_output.format_cell(result['until'])}"
        if paused and result["reason"]:
            line += f": {result['reason']}"
        _output.say(line)
    if result["unchanged"]:
        state = "was already paused (pause updated)" if paused else "was not paused"
        _output.say(f"{', '.join(result['unchanged'])}: {state}")


@app.command()
def purge(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The queue to empty.")],
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Cancel every waiting and scheduled job of a queue (running ones are left alone),
    in chunks, with an audit row; previews and asks unless --yes."""
    from jobsys.cli.jobs import execute_bulk
    from jobsys.jobs.browser import JobFilters
    from jobsys.jobs.bulk import BulkRequest

    request = BulkRequest(
        action="queues_purge", filters=JobFilters(queues=(name,)), dry_run=dry_run
    )
    execute_bulk(ctx, request, yes=yes, json=json)
