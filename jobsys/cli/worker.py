"""``jobsys worker``: run lanes (all, or those named) in this process."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

import typer

from jobsys.cli._context import run, settings


class LogFormat(StrEnum):
    text = "text"
    json = "json"


def worker(
    ctx: typer.Context,
    lane: Annotated[
        list[str] | None,
        typer.Option("--lane", "-l", help="Run this lane (repeatable). Default: every lane."),
    ] = None,
    drain: Annotated[
        bool,
        typer.Option("--drain", help="Exit 0 once no job is waiting or running in the lanes."),
    ] = False,
    log_format: Annotated[
        LogFormat, typer.Option("--log-format", help="text, or json (one object per line).")
    ] = LogFormat.text,
    concurrency_scale: Annotated[
        float,
        typer.Option("--concurrency-scale", help="Multiply every lane's concurrency (min 1)."),
    ] = 1.0,
) -> None:
    """Run the selected lanes until SIGTERM/SIGINT (or, with --drain, until empty).

    Exit codes: 0 stopped on request; 1 a lane or background service died and could
    not be restored; 2 bad lane name or configuration; 69 database unreachable;
    70 a sync job could not be stopped (past its timeout, or at shutdown); 75 fenced:
    it lost its lease on its jobs (cut off from the database, or taken for dead), so
    it exited at once and left them to the reaper.
    """
    from jobsys.app import run_worker
    from jobsys.cli._pipe import serving

    serving()  # its output is logs: a reader going away never stops it
    result = run(
        run_worker(
            settings(ctx),
            lanes=lane,
            drain=drain,
            log_format=log_format.value,
            concurrency_scale=concurrency_scale,
        )
    )
    if result.exit_code:
        raise typer.Exit(result.exit_code)
