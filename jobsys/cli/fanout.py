"""``jobsys fanout``: fan-out runs: how far each has come."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import run, settings

app = typer.Typer(help="Fan-out runs: list them, show how far one has come.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]

LIST_COLUMNS = (
    "id",
    "entry",
    "status",
    "started_at",
    "batches_done",
    "items_enqueued",
    "cursor",
    ("duration_seconds", "duration s"),
)


@app.command("list")
def list_(
    ctx: typer.Context,
    entry: Annotated[str | None, typer.Option("--entry", help="Only runs of this entry.")] = None,
    status: Annotated[
        str | None,
        typer.Option("--status", help="queued, running, finished, failed or cancelled."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 50,
    json: JsonOpt = False,
) -> None:
    """Fan-out runs, newest first."""
    from jobsys.cli import _output
    from jobsys.schedule import service

    rows = run(service.list_runs(settings(ctx), entry=entry, status=status, limit=limit))
    if json:
        _output.emit_json(rows)
    else:
        _output.table(rows, LIST_COLUMNS, empty="no fan-out runs")


@app.command()
def show(
    ctx: typer.Context,
    run_id: Annotated[int, typer.Argument(metavar="RUN", help="The run id.")],
    json: JsonOpt = False,
) -> None:
    """One run: entry, started, batches, items enqueued and pending, cursor, status, duration."""
    from jobsys.cli import _output
    from jobsys.schedule import service

    result = run(service.show_run(settings(ctx), run_id))
    if json:
        _output.emit_json(result)
    else:
        _output.key_values(result, title=f"fan-out run {run_id}")
