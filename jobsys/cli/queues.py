"""``jobsys queues``: every configured queue, its lane, and how busy it is; and
``jobsys queues purge NAME``: cancel every waiting job of a queue."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import run, settings

app = typer.Typer(
    help="Queues: how busy each one is (`jobsys queues` alone lists them); purge one.",
    invoke_without_command=True,
)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]


@app.callback()
def queues(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Each queue with its lane, concurrency, jobs waiting, scheduled, running,
    failures in the last hour, and the age of the oldest waiting job."""
    if ctx.invoked_subcommand is None:
        list_(ctx, json=json)


@app.command("list")
def list_(ctx: typer.Context, json: JsonOpt = False) -> None:
    """Each queue with its lane, concurrency, jobs waiting, scheduled, running,
    failures in the last hour, and the age of the oldest waiting job."""
    from jobsys.cli import _output
    from jobsys.lanes import service

    rows = run(service.queue_overview(settings(ctx)))
    if json:
        _output.emit_json(rows)
        return
    _output.table(
        rows,
        [
            "queue",
            "lane",
            "concurrency",
            "waiting",
            "scheduled",
            "running",
            ("failed_last_hour", "failed 1h"),
            ("oldest_wait_seconds", "oldest wait s"),
        ],
    )


@app.command()
def purge(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(metavar="NAME", help="The queue to empty.")],
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Count and show a sample; change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    json: JsonOpt = False,
) -> None:
    """Cancel every waiting and scheduled job of a queue (running ones are left alone),
    in chunks, with an audit row."""
    from jobsys.cli.jobs import execute_bulk
    from jobsys.jobs.bulk import BulkRequest
    from jobsys.live.browser import JobFilters

    request = BulkRequest(
        action="queues_purge", filters=JobFilters(queues=(name,)), dry_run=dry_run
    )
    execute_bulk(ctx, request, yes=yes, json=json)
