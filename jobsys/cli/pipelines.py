"""``jobsys pipelines``: multi-step work per entity: list, show, cancel."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import run, settings

app = typer.Typer(help="Pipelines: multi-step work per entity (list, show, cancel).")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]

LIST_COLUMNS = (
    "id",
    "name",
    "entity",
    "status",
    ("steps_succeeded", "done"),
    "steps",
    ("steps_failed", "failed"),
    "created_at",
    "finished_at",
)
STEP_COLUMNS = (
    "stage",
    "step",
    "queue",
    "status",
    "job_id",
    "job_status",
    "attempts",
    "failures",
    "last_error",
)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="pending, running, succeeded, failed or cancelled."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Created at or after: 2h, 7d, or an ISO time.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many, newest first.")] = 100,
    json: JsonOpt = False,
) -> None:
    """List pipelines, newest first."""
    from jobsys.cli import _output
    from jobsys.retry.pipeline_service import list_pipelines

    rows = run(list_pipelines(settings(ctx), status=status, since=since, limit=limit))
    if json:
        _output.emit_json({"pipelines": rows})
    else:
        _output.table(rows, LIST_COLUMNS, empty="no pipeline matches")


@app.command()
def show(
    ctx: typer.Context,
    pipeline_id: Annotated[int, typer.Argument(help="Pipeline id.")],
    json: JsonOpt = False,
) -> None:
    """Show a pipeline and its steps: status, job ids, attempts, failures."""
    from jobsys.cli import _output
    from jobsys.retry.pipeline_service import show_pipeline

    data = run(show_pipeline(settings(ctx), pipeline_id))
    if json:
        _output.emit_json(data)
        return
    head = {k: v for k, v in data.items() if k not in ("steps", "args")}
    _output.key_values(head, title=f"pipeline {pipeline_id}")
    _output.table(data["steps"], STEP_COLUMNS, title="steps")


@app.command()
def cancel(
    ctx: typer.Context,
    pipeline_id: Annotated[int, typer.Argument(help="Pipeline id.")],
    json: JsonOpt = False,
) -> None:
    """Cancel a pipeline: waiting steps are cancelled, running ones asked to abort."""
    from jobsys.cli import _output
    from jobsys.retry.pipeline_service import cancel_pipeline

    result = run(cancel_pipeline(settings(ctx), pipeline_id))
    if json:
        _output.emit_json(result)
    elif result["already_cancelled"]:
        _output.say(f"pipeline {pipeline_id} was already cancelled")
    else:
        _output.say(
            f"pipeline {pipeline_id} cancelled: {len(result['cancelled_jobs'])} waiting job(s) "
            f"cancelled, {len(result['abort_requested_jobs'])} running job(s) asked to abort"
        )
