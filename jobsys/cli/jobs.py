"""``jobsys jobs``: browse jobs (list, show) and cancel one."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobsys.cli._context import config, settings, task_notes
from jobsys.cli._options import (
    DryRunOpt,
    EverythingOpt,
    JsonOpt,
    NewestLimitOpt,
    WideOpt,
    YesOpt,
    id_argument,
    option_group,
    time_option,
)
from jobsys.cli._table import Col
from jobsys.errors import UsageError

if TYPE_CHECKING:
    from jobsys.jobs.browser import JobFilters
    from jobsys.jobs.bulk import BulkRequest

app = typer.Typer(help="Jobs browser: list and inspect jobs; cancel or delete, one or by filter.")

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
JobId = Annotated[int, id_argument("job", "jobsys jobs list", help="The job id.")]


QueueOpt = Annotated[
    list[str] | None, typer.Option("--queue", "-q", help="Only this queue (repeatable).")
]
LaneOpt = Annotated[str | None, typer.Option("--lane", help="Only the queues of this lane.")]
TaskOpt = Annotated[str | None, typer.Option("--task", help="Only this task name.")]
StatusOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--status",
        "-s",
        help="todo|doing|succeeded|failed|cancelled|aborted (or waiting, running); repeatable.",
    ),
]
AccountOpt = Annotated[
    str | None,
    typer.Option("--account", help="Only jobs for this account (its task's account argument)."),
]
SinceOpt = Annotated[str | None, time_option("--since", "Deferred since")]
ArgOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--arg",
        help="KEY=VALUE the args contain (dots for nested keys: customer.id=7); repeatable.",
    ),
]
ArgContainsOpt = Annotated[
    str | None,
    typer.Option(
        "--arg-contains", help="Text in any arg value (case-insensitive; secrets excluded)."
    ),
]
ChunkOpt = Annotated[
    int | None,
    typer.Option("--chunk-size", help="Jobs per transaction, each one short (default 1000)."),
]


def job_filters(
    queue: QueueOpt = None,
    lane: LaneOpt = None,
    task: TaskOpt = None,
    status: StatusOpt = None,
    account: AccountOpt = None,
    since: SinceOpt = None,
    arg: ArgOpt = None,
    arg_contains: ArgContainsOpt = None,
) -> JobFilters:
    """The filters of ``jobs list``, ``jobs delete`` and ``jobs cancel``."""
    from jobsys.jobs.browser import JobFilters

    return JobFilters(
        queues=tuple(queue or ()),
        lane=lane,
        task=task,
        statuses=tuple(status or ()),
        account=account,
        since=since,
        args=tuple(arg or ()),
        arg_contains=arg_contains,
    )


@app.command("list")
@option_group(filters=job_filters)
def list_(
    ctx: typer.Context,
    *,
    filters: JobFilters,
    limit: NewestLimitOpt = 50,
    wide: WideOpt = False,
    json: JsonOpt = False,
) -> None:
    """List jobs, newest first, with their args redacted."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.jobs.browser import list_jobs

    filters = dataclasses.replace(filters, limit=limit)
    jobs = run(list_jobs(settings(ctx), config(ctx, with_tasks=True), filters))
    _output.rows_or_table(
        jobs,
        LIST_COLUMNS,
        json=json,
        wide=wide,
        empty="no jobs match",
        limit=limit,
        notes=task_notes(ctx, filters.task, filters.args),
    )


#: A bulk action run with the options given: ``bulk(ctx, action, filters, json=...,
#: **request)``, the rest of the ``BulkRequest`` (``before``, ``abort_running``) by name.
Bulk = Callable[..., None]


def bulk_options(
    everything: EverythingOpt = False,
    dry_run: DryRunOpt = False,
    yes: YesOpt = False,
    chunk_size: ChunkOpt = None,
) -> Bulk:
    """How ``jobs delete --all`` and ``jobs cancel --all`` run."""
    return functools.partial(
        run_bulk, everything=everything, dry_run=dry_run, chunk=chunk_size, yes=yes
    )


def run_bulk(
    ctx: typer.Context,
    action: str,
    filters: JobFilters,
    *,
    yes: bool,
    json: bool,
    **request: Any,
) -> None:
    from jobsys.jobs.bulk import BulkRequest

    execute_bulk(ctx, BulkRequest(action, filters, **request), yes=yes, json=json)


def verb_of(request: BulkRequest) -> str:
    return "deleting" if request.action == "jobs_delete" else "cancelling"


def execute_bulk(ctx: typer.Context, request: BulkRequest, *, yes: bool, json: bool) -> None:
    """Run a bulk action: preview and ask (on stderr) unless --yes or --dry-run, a
    progress bar on stderr, the report on stdout (one JSON document with --json)."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.cli._pipe import committed
    from jobsys.jobs.bulk import bulk_action

    for note in task_notes(ctx, request.filters.task, request.filters.args):
        _output.say(f"note: {note}")

    def confirm(report: dict[str, Any]) -> bool:
        if yes:
            return True
        _output.bulk_report(report, to_stderr=True)
        _output.confirm(f"{_output.bulk_verb(report)} {report['total']} jobs?")
        return True

    # The bar opens with the first chunk, after any confirmation prompt.
    bars = contextlib.ExitStack()
    update: list[Callable[[int, int], None]] = []

    def progress(done: int, total: int) -> None:
        if not update:
            update.append(bars.enter_context(_output.progress_bar(verb_of(request))))
        update[0](done, total)

    with bars:
        report = run(
            bulk_action(
                settings(ctx),
                config(ctx, with_tasks=True),
                request,
                confirm=confirm,
                progress=progress,
            )
        )
    if not request.dry_run:
        committed()
    if json:
        _output.emit_json(report)
    else:
        _output.bulk_report(report)


@app.command()
@option_group(filters=job_filters, bulk=bulk_options)
def delete(
    ctx: typer.Context,
    all_: Annotated[
        bool, typer.Option("--all", help="Delete every finished job the filters match.")
    ] = False,
    before: Annotated[str | None, time_option("--before", "No activity since (past)")] = None,
    *,
    filters: JobFilters,
    bulk: Bulk,
    json: JsonOpt = False,
) -> None:
    """Delete finished jobs (succeeded, failed, cancelled, aborted) by filter, in chunks.

    Never a waiting or running job. Their failure rows stay (they hold their own copy
    of task, queue, args and account). Without --yes, previews and asks."""
    if not all_:
        raise UsageError(
            "give --all and filters: `jobsys jobs delete --all --status succeeded --before 7d`."
        )
    bulk(ctx, "jobs_delete", filters, json=json, before=before)


@app.command()
def show(ctx: typer.Context, job_id: JobId, json: JsonOpt = False) -> None:
    """Show one job: args (redacted), status history, failures, retry state, whether
    `jobsys jobs retry` would retry its latest failure (if not, why), pipeline."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.jobs.browser import show_job

    job = run(show_job(settings(ctx), config(ctx, with_tasks=True), job_id))
    from jobsys.cli.failures import retry_lines, verdict_keys, would_retry_text
    from jobsys.retry.rules import latest_refusal

    # Whether `jobsys jobs retry` would retry its latest failure, and if not why (as
    # failures show and the web console's job page say it); null without a failure.
    if job["failures"]:
        job.update(verdict_keys(latest_refusal(job)))
    else:
        job.update(would_retry=None, retry_refusal=None)
    if json:
        _output.emit_json(job)
        return
    from jobsys.flow.service import scheduled_for

    # The retry state and verdict (the latest failure's) are said in words below.
    nested = (
        "history",
        "failures",
        "retries",
        "pipeline",
        "retry_state",
        "would_retry",
        "retry_refusal",
    )
    head = {k: v for k, v in job.items() if k not in nested}
    if job["scheduled_at"] and head["waiting_because"] == scheduled_for(job["scheduled_at"]):
        head["waiting_because"] = f"scheduled for {_output.format_cell(job['scheduled_at'])}"
    if job["failures"]:  # the retry state of its latest failure, in words, as true now
        from jobsys.retry.rules import failed_again_after, state_now

        latest = job["failures"][-1]
        state = state_now(
            job.get("retry_state") or {},
            job["status"],
            failed_again_since=failed_again_after(latest["id"], job["failures"]),
        )
        head.update(retry_lines(state, latest.get("retryable")))
        head["would_retry"] = would_retry_text(
            job["retry_refusal"],
            told_by=f"its latest failure ({latest['id']}) and the job",
            dry_run=f"jobsys jobs retry {job_id} --dry-run",
        )
    _output.key_values(head, title=f"job {job_id}")
    history = ["type", ("occurred_at", "at")]
    _output.table(job["history"], history, title="history", empty="no history", wide=None)
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
@option_group(filters=job_filters, bulk=bulk_options)
def cancel(
    ctx: typer.Context,
    job_id: Annotated[
        int | None, id_argument("job", "jobsys jobs list", help="The job id.")
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Cancel every waiting job the filters match.")
    ] = False,
    abort_running: Annotated[
        bool, typer.Option("--abort-running", help="With --all: ask running ones to abort too.")
    ] = False,
    *,
    filters: JobFilters,
    bulk: Bulk,
    json: JsonOpt = False,
) -> None:
    """Cancel one job (waiting: cancelled; running: abort requested; others refused,
    exit 2), or with --all every waiting and scheduled job the filters match, in
    chunks (running ones only with --abort-running). Without --yes, previews and asks."""
    from jobsys.cli import _output
    from jobsys.cli._context import run
    from jobsys.cli._pipe import committed
    from jobsys.jobs.browser import cancel_job

    if job_id is not None and all_:
        raise UsageError("give a job id or --all with filters, not both.")
    if job_id is None:
        if not all_:
            raise UsageError("give a job id, or --all with filters (see --help).")
        bulk(ctx, "jobs_cancel", filters, json=json, abort_running=abort_running)
        return
    result = run(cancel_job(settings(ctx), config(ctx), job_id))
    committed()
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
