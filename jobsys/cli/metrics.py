"""``jobsys metrics``: Prometheus text exposition of queues, failures, issues, workers."""

from __future__ import annotations

import typer

from jobsys.cli._context import config, settings


def metrics(ctx: typer.Context) -> None:
    """Print the metrics in Prometheus text format (workers serve the same on metrics.port)."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.metrics.service import exposition

    _output.print_text(run(exposition(settings(ctx), config(ctx))))
