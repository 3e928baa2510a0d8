"""``jobsys pipelines``: multi-step work per entity: list, show, cancel."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import config, run, settings
from jobsys.cli._options import JsonOpt, NewestLimitOpt, WideOpt, id_argument, time_option
from jobsys.cli._table import Col

app = typer.Typer(help="Pipelines: multi-step work per entity (list, show, cancel).")


LIST_COLUMNS = (
    Col("id", kind="id", priority=0),
    Col("name", priority=0),
    Col("entity", priority=1),
    Col("status", priority=0),
    Col("steps_succeeded", "done", kind="number", priority=2),
    Col("steps", kind="number", priority=2),
    Col("steps_failed", "failed", kind="number", priority=2),
    Col("created_at", "created", kind="time", priority=1),
    Col("finished_at", "finished", kind="time", priority=3),
    Col("updated_at", "updated", kind="time", wide_only=True),
    Col("cancelled_by", wide_only=True),
)
STEP_COLUMNS = (
    Col("stage", kind="number", priority=0),
    Col("step", priority=0),
    Col("queue", priority=3),
    Col("status", priority=0),
    Col("job_id", "job", kind="id", priority=1),
    Col("job_status", priority=2),
    Col("attempts", kind="number", priority=2),
    Col("failures", kind="number", priority=1),
    Col("last_error", kind="text", priority=1),
)

PipelineIdArg = Annotated[
    int, id_argument("pipeline", "jobsys pipelines list", help="Pipeline id.")
]


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option("--status", help="pending, running, succeeded, failed or cancelled."),
    ] = None,
    since: Annotated[str | None, time_option("--since", "Created at or after")] = None,
    limit: NewestLimitOpt = 100,
    wide: WideOpt = False,
    json: JsonOpt = False,
) -> None:
    """List pipelines, newest first."""
    from jobsys.cli import _output
    from jobsys.pipelines.service import list_pipelines

    rows = run(list_pipelines(settings(ctx), config(ctx), status=status, since=since, limit=limit))
    _output.rows_or_table(
        rows, LIST_COLUMNS, json=json, wide=wide, empty="no pipeline matches", limit=limit
    )


@app.command()
def show(ctx: typer.Context, pipeline_id: PipelineIdArg, json: JsonOpt = False) -> None:
    """Show a pipeline and its steps: status, job ids, attempts, failures."""
    from jobsys.cli import _output
    from jobsys.pipelines.service import show_pipeline

    data = run(show_pipeline(settings(ctx), config(ctx), pipeline_id))
    if json:
        _output.emit_json(data)
        return
    head = {k: v for k, v in data.items() if k not in ("steps", "args")}
    _output.key_values(head, title=f"pipeline {pipeline_id}")
    _output.table(data["steps"], STEP_COLUMNS, title="steps", wide=None)


@app.command()
def cancel(ctx: typer.Context, pipeline_id: PipelineIdArg, json: JsonOpt = False) -> None:
    """Cancel a pipeline: waiting steps are cancelled, running ones asked to abort."""
    from jobsys.cli import _output
    from jobsys.cli._pipe import committed
    from jobsys.pipelines.service import cancel_pipeline

    result = run(cancel_pipeline(settings(ctx), config(ctx), pipeline_id))
    committed()
    if json:
        _output.emit_json(result)
    elif result["already_cancelled"]:
        _output.say(f"pipeline {pipeline_id} was already cancelled")
    else:
        _output.say(
            f"pipeline {pipeline_id} cancelled: {len(result['cancelled_jobs'])} waiting job(s) "
            f"cancelled, {len(result['abort_requested_jobs'])} running job(s) asked to abort"
        )
