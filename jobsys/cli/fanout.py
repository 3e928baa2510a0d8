"""``jobsys fanout``: fan-out runs: how far each has come."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import config, run, settings
from jobsys.cli._options import JsonOpt, NewestLimitOpt, WideOpt, id_argument
from jobsys.cli._table import Col

app = typer.Typer(help="Fan-out runs: list them, show how far one has come.")


LIST_COLUMNS = (
    Col("id", kind="id", priority=0),
    Col("entry", priority=0),
    Col("status", priority=0),
    Col("started_at", "started", kind="time", priority=1),
    Col("items_enqueued", "items", kind="number", priority=2),
    Col("batches_done", "batches", kind="number", priority=3),
    Col("duration_seconds", "duration", kind="duration", priority=3),
    Col("cursor", kind="text", priority=4),
)


@app.command("list")
def list_(
    ctx: typer.Context,
    entry: Annotated[str | None, typer.Option("--entry", help="Only runs of this entry.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="queued, running, finished, failed or cancelled."),
    ] = None,
    limit: NewestLimitOpt = 50,
    wide: WideOpt = False,
    json: JsonOpt = False,
) -> None:
    """Fan-out runs, newest first."""
    from jobsys.cli import _output
    from jobsys.errors import did_you_mean
    from jobsys.schedule import service

    chosen = config(ctx)
    notes = []
    fanouts = [name for name, e in chosen.schedule.entries.items() if e.fanout is not None]
    if entry is not None and entry not in fanouts:
        # A note, not a refusal: runs of an entry since removed from the file still list.
        notes.append(
            f"--entry {entry!r} is not a fan-out entry of schedule.yaml"
            f"{did_you_mean(entry, fanouts)}; fan-out entries: {', '.join(fanouts) or 'none'}"
        )
    rows = run(service.list_runs(settings(ctx), chosen, entry=entry, status=status, limit=limit))
    _output.rows_or_table(
        rows,
        LIST_COLUMNS,
        json=json,
        wide=wide,
        empty="no fan-out runs",
        limit=limit,
        notes=notes,
    )


@app.command()
def show(
    ctx: typer.Context,
    run_id: Annotated[
        int, id_argument("fan-out run", "jobsys fanout list", help="The run id.", metavar="RUN")
    ],
    json: JsonOpt = False,
) -> None:
    """One run: entry, started, batches, items enqueued and pending, progress, cursor,
    status, duration."""
    from jobsys.cli import _output
    from jobsys.schedule import service

    result = run(service.show_run(settings(ctx), config(ctx), run_id))
    if json:
        _output.emit_json(result)
    else:
        _output.key_values(result, title=f"fan-out run {run_id}")
