"""``jobsys jobs``: browse jobs (list, show) and cancel one."""

from __future__ import annotations

from typing import Annotated

import typer

from jobsys.cli._context import settings
from jobsys.cli._options import JsonOpt, WideOpt
from jobsys.cli._table import Col

app = typer.Typer(help="Jobs browser: list and inspect jobs, cancel one.")

LIST_COLUMNS = (
    Col("id", kind="id", priority=0),
    Col("status", priority=0),
    Col("task", priority=0),
    Col("created_at", "created", kind="time", priority=1),
    Col("queue", priority=2),
    Col("attempts", kind="number", priority=3),
    Col("args", kind="text", priority=4, min=16),
    Col("lane", wide_only=True),
    Col("scheduled_at", "scheduled", kind="time", wide_only=True),
    Col("priority", kind="number", wide_only=True),
)
JobId = Annotated[int, typer.Argument(help="The job id.", min=1)]


@app.command("list")
def list_(
    ctx: typer.Context,
    queue: Annotated[
        list[str] | None, typer.Option("--queue", "-q", help="Only this queue (repeatable).")
    ] = None,
    lane: Annotated[
        str | None, typer.Option("--lane", help="Only the queues of this lane.")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Only this task name.")] = None,
    status: Annotated[
        list[str] | None,
        typer.Option(
            "--status",
            "-s",
            help="todo|doing|succeeded|failed|cancelled|aborted (or waiting, running); repeatable.",
        ),
    ] = None,
    account: Annotated[
        str | None,
        typer.Option("--account", help="Only jobs for this account (its task's account argument)."),
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="Deferred since: 15m, 2h, 1d or an ISO-8601 time.")
    ] = None,
    arg: Annotated[
        list[str] | None,
        typer.Option(
            "--arg",
            help="KEY=VALUE the args contain (dots for nested keys: customer.id=7); repeatable.",
        ),
    ] = None,
    arg_contains: Annotated[
        str | None,
        typer.Option(
            "--arg-contains", help="Text in any arg value (case-insensitive; secrets excluded)."
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="At most this many (newest first).")
    ] = 50,
    wide: WideOpt = False,
    json: JsonOpt = False,
) -> None:
    """List jobs, newest first, with their args redacted."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.live.browser import JobFilters, list_jobs

    filters = JobFilters(
        queues=tuple(queue or ()),
        lane=lane,
        task=task,
        statuses=tuple(status or ()),
        account=account,
        since=since,
        limit=limit,
        args=tuple(arg or ()),
        arg_contains=arg_contains,
    )
    jobs = run(list_jobs(settings(ctx), filters))
    if json:
        _output.emit_list(jobs, limit=limit)
        return
    _output.table(jobs, LIST_COLUMNS, empty="no jobs match", wide=wide)


@app.command()
def show(ctx: typer.Context, job_id: JobId, json: JsonOpt = False) -> None:
    """Show one job: args (redacted), status history, failures, retry state, pipeline."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.live.browser import show_job

    job = run(show_job(settings(ctx), job_id))
    if json:
        _output.emit_json(job)
        return
    nested = ("history", "failures", "retries", "pipeline")
    _output.key_values({k: v for k, v in job.items() if k not in nested}, title=f"job {job_id}")
    _output.table(job["history"], ["type", "at"], title="history", empty="no history", wide=None)
    if job["failures"]:
        _output.table(
            job["failures"],
            [
                Col("attempt", kind="number", priority=0),
                Col("kind", priority=0),
                Col("reason", priority=3),
                Col("error_class", "error", priority=2),
                Col("message", kind="text", priority=1),
                Col("issue_id", "issue", kind="id", priority=1),
                Col("occurred_at", kind="time", priority=0),
            ],
            title="failures",
            wide=None,
        )
    if job["retries"]:
        _output.table(
            job["retries"],
            ["decision", "new_job_id", "actor", "created_at"],
            title="retries",
            wide=None,
        )
    if job["pipeline"]:
        pipeline = job["pipeline"]
        _output.table(
            pipeline["steps"],
            ["stage", "step", "task", "status", "job_id", "attempts"],
            wide=None,
            title=f"pipeline {pipeline['id']} {pipeline['name']} ({pipeline['status']})",
        )


@app.command()
def cancel(ctx: typer.Context, job_id: JobId, json: JsonOpt = False) -> None:
    """Cancel a waiting job, or ask a running one to abort (others: refused, exit 2)."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.live.browser import cancel_job

    result = run(cancel_job(settings(ctx), job_id))
    if json:
        _output.emit_json(result)
    elif result["result"] == "cancelled":
        _output.say(f"job {job_id} cancelled (it was waiting)")
    else:
        _output.say(f"job {job_id} is running: abort requested (the task stops at its next check)")


@app.command()
def retry(
    ctx: typer.Context,
    job_id: JobId,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the verdict; change nothing.")
    ] = False,
    json: JsonOpt = False,
) -> None:
    """Retry a failed job through the retry rules (its latest failure; exit 3 if refused)."""
    from jobsys.cli.retry import execute
    from jobsys.retry.service import RetryRequest

    execute(ctx, RetryRequest(job=job_id, dry_run=dry_run), yes=True, json=json)
