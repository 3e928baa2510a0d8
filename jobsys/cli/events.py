"""``jobsys events``: stream live events (for scripts, tests and curious operators)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobsys.cli._context import config, settings


def events(
    ctx: typer.Context,
    topic: Annotated[
        list[str] | None,
        typer.Option("--topic", "-t", help="Only this topic (repeatable). Default: all."),
    ] = None,
    json: Annotated[
        bool, typer.Option("--json", help="One JSON object per line, flushed as it arrives.")
    ] = False,
) -> None:
    """Stream live events as they happen (Ctrl-C to stop; piped, it stops once its
    reader does, exit 141).

    A `resync` record after a reconnection means events may have been missed: re-read.
    """
    from datetime import UTC, datetime

    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.cli._pipe import while_read
    from jobsys.live import stream

    def on_event(event: dict[str, Any]) -> None:
        if event["received_at"] is None:
            event["received_at"] = datetime.now(UTC)
        if json:
            _output.emit_json_line(event)
        else:
            _output.event_line(event["received_at"], event["topic"], event["data"])

    try:
        # Stops when the reader goes away (`| head -3`), not at the next event after.
        follow = stream.follow(settings(ctx), config(ctx), topic or [], on_event, _output.say)
        run(while_read(follow))
    except KeyboardInterrupt:
        raise typer.Exit(0) from None
