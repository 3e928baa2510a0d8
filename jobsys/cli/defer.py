"""``jobsys defer``: put one job in its queue and print its id."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import config, run, settings
from jobsys.cli._options import JsonOpt


def defer(
    ctx: typer.Context,
    task: Annotated[
        str, typer.Argument(metavar="TASK", help="Task name, e.g. demo.refresh_profile.")
    ],
    args: Annotated[str, typer.Option("--args", "-a", help="Arguments as a JSON object.")] = "{}",
    queue: Annotated[
        str | None, typer.Option("--queue", "-q", help="Another configured queue.")
    ] = None,
    in_: Annotated[
        str | None, typer.Option("--in", help="Run after this delay: 30s, 10m, 2h, 1d.")
    ] = None,
    at: Annotated[
        str | None, typer.Option("--at", help="Run at this ISO-8601 time (UTC if no offset).")
    ] = None,
    lock: Annotated[
        str | None, typer.Option("--lock", help="Jobs sharing a lock never run at once.")
    ] = None,
    queueing_lock: Annotated[
        str | None,
        typer.Option("--queueing-lock", help="Refuse if a job with this lock is waiting."),
    ] = None,
    priority: Annotated[
        int | None, typer.Option("--priority", help="Higher runs first. Default: the task's.")
    ] = None,
    unique_for: Annotated[
        str | None,
        typer.Option(
            "--unique-for",
            help="Unique for this period (1h): a job of the same task and key that counts "
            "is returned instead.",
        ),
    ] = None,
    unique_key: Annotated[
        list[str] | None,
        typer.Option("--unique-key", help="An arg that makes jobs the same (repeatable)."),
    ] = None,
    json: JsonOpt = False,
) -> None:
    """Defer a job and print its id. Bad input exits 2 and inserts nothing."""
    from jobsys.cli import _output
    from jobsys.cli._pipe import committed
    from jobsys.jobs import service

    result = run(
        service.defer_from_cli(
            settings(ctx),
            config(ctx, with_tasks=True),
            task,
            args,
            queue=queue,
            in_=in_,
            at=at,
            lock=lock,
            queueing_lock=queueing_lock,
            priority=priority,
            unique_for=unique_for,
            unique_keys=tuple(unique_key or ()),
        )
    )
    committed()
    if json:
        _output.emit_json(result)
        return
    _output.print_text(str(result["job_id"]))
    if result["duplicate"]:
        _output.say(f"already queued as job {result['job_id']}; nothing was deferred")
        return
    when = _output.format_cell(result["scheduled_at"]) if result["scheduled_at"] else "now"
    _output.say(
        f"deferred {result['task']} on {result['queue']} (lane {result['lane']}), due {when}"
    )
