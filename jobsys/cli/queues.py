"""``jobsys queues``: every configured queue, its lane, and how busy it is."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import run, settings


def queues(
    ctx: typer.Context,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
) -> None:
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
