"""``jobsys queues``: every configured queue, its lane, and how busy it is."""

from __future__ import annotations

import typer

from jobsys.cli._context import run, settings
from jobsys.cli._options import JsonOpt, WideOpt
from jobsys.cli._table import Col

LIST_COLUMNS = (
    Col("queue", priority=0),
    Col("lane", priority=1),
    Col("waiting", kind="number", priority=0),
    Col("running", kind="number", priority=0),
    Col("concurrency", kind="number", priority=3),
    Col("scheduled", kind="number", priority=3),
    Col("failed_last_hour", "failed 1h", kind="number", priority=2),
    Col("oldest_wait_seconds", "oldest wait", kind="duration", priority=2),
)


def queues(
    ctx: typer.Context,
    wide: WideOpt = False,
    json: JsonOpt = False,
) -> None:
    """Each queue with its lane, concurrency, jobs waiting, scheduled, running,
    failures in the last hour, and the age of the oldest waiting job."""
    from jobsys.cli import _output
    from jobsys.lanes import service

    rows = run(service.queue_overview(settings(ctx)))
    if json:
        _output.emit_list(rows)
        return
    _output.table(rows, LIST_COLUMNS, wide=wide)
