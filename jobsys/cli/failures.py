"""``jobsys failures``: what failed, for which account, why, and can it be retried."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from jobsys.cli._context import read_config, run, settings, task_notes
from jobsys.cli._options import (
    JsonOpt,
    WideOpt,
    id_argument,
    id_option,
    option_group,
    time_option,
)
from jobsys.cli._table import Col, absolute
from jobsys.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from jobsys.config import Config
    from jobsys.failures.filters import FailureFilter
    from jobsys.retry.rules import Decision
    from jobsys.settings import Settings

app = typer.Typer(help="Failures: every failed attempt, with its kind, context and issue.")

LIST_COLUMNS = (
    Col("id", kind="id", priority=0),
    Col("occurred_at", "when", kind="time", priority=0),
    Col("task", priority=0),
    Col("error", kind="text", priority=1, min=12, want=24),
    Col("kind", priority=2),
    Col("issue_id", "issue", kind="id", priority=3),
    Col("account_id", "account", priority=3),
    Col("attempt", kind="number", priority=4),
    Col("queue", priority=5),
    Col("retryable", priority=6),
    Col("job_id", "job", kind="id", wide_only=True),
    Col("lane", wide_only=True),
    Col("reason", wide_only=True),
)
GROUP_COLUMNS = (
    Col("occurrences", "count", kind="number", priority=0),
    Col("affected_accounts", "accounts", kind="number", priority=1),
    Col("last_seen", kind="time", priority=1),
)
# --group-by fingerprint / issue: the group's issue (its newest) and its title.
ISSUE_COLUMNS = (
    Col("issue_id", "issue", kind="id", priority=2),
    Col("issue_title", "title", kind="text", priority=2, min=16),
)


def failure_filter_options(
    kind: Annotated[
        str | None, typer.Option("--kind", help="authentication, transient or runtime.")
    ] = None,
    task: Annotated[str | None, typer.Option("--task", help="Task name (exact).")] = None,
    queue: Annotated[str | None, typer.Option("--queue", help="Queue name (exact).")] = None,
    lane: Annotated[str | None, typer.Option("--lane", help="Lane name (exact).")] = None,
    account: Annotated[str | None, typer.Option("--account", help="Account id (exact).")] = None,
    issue: Annotated[
        int | None, id_option("--issue", "issue", "jobsys issues list", help="Issue id.")
    ] = None,
    since: Annotated[str | None, time_option("--since", "Failed at or after")] = None,
    until: Annotated[str | None, time_option("--until", "Failed before")] = None,
    error: Annotated[
        str | None,
        typer.Option(
            "--error", help="Text in the message or error class (case-insensitive, literal)."
        ),
    ] = None,
) -> FailureFilter:
    """The filters of ``failures list`` and ``retry --all``: one set of failures."""
    from jobsys.failures import filters

    return filters.failure_filters(
        kind=kind,
        task=task,
        queue=queue,
        lane=lane,
        account=account,
        issue=issue,
        since=since,
        until=until,
        error=error,
    )


@app.command("list")
@option_group(chosen=failure_filter_options)
def list_(
    ctx: typer.Context,
    chosen: FailureFilter,
    profile: Annotated[str | None, typer.Option(help="Profile id (exact).")] = None,
    retryable: Annotated[
        bool | None,
        typer.Option("--retryable/--not-retryable", help="Only retryable / not retryable ones."),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", help="At most this many rows (or groups).")
    ] = 50,
    before: Annotated[
        int | None,
        id_option(
            "--before",
            "failure",
            "jobsys failures list",
            help="Page on: only failures older than this failure id.",
        ),
    ] = None,
    group_by: Annotated[
        str | None,
        typer.Option("--group-by", help="Count per fingerprint, task, queue, kind or issue."),
    ] = None,
    window: Annotated[
        str | None,
        typer.Option(
            help="With --group-by: count the newest 5,000 matching failures (default),"
            " or all (exact; seconds at a million).",
        ),
    ] = None,
    wide: WideOpt = False,
    json: JsonOpt = False,
) -> None:
    """List failures, newest first (filters combine with AND); or counts with --group-by."""
    from jobsys.cli import _output
    from jobsys.failures import filters, service

    chosen = filters.narrowed(chosen, profile=profile, retryable=retryable, before=before)
    filters.check_limit(limit)
    filters.check_group_by(group_by)
    if window is not None and group_by is None:
        raise UsageError("--window counts groups: give it with --group-by.")
    counted = filters.check_window(window) if group_by is not None else None
    result = run(
        service.list_failures(
            settings(ctx),
            read_config(ctx),
            chosen,
            limit=limit,
            group_by=group_by,
            window=counted,
        )
    )
    result["notes"] = [*result["notes"], *task_notes(ctx, chosen.task)]
    notes = [*result["notes"], *_window_notes(result.get("window"))]
    for note in notes:
        _output.say(f"note: {note}")
    if json and group_by is not None:
        _output.emit_list(
            result["groups"],
            total=result["total"],
            notes=notes,
            group_by=group_by,
            window=result.get("window"),
        )
    elif json:
        from jobsys.failures.service import COUNT_CAP

        capped = [] if result["total"] is not None else [f"more than {COUNT_CAP} match"]
        _output.emit_list(
            result["failures"],
            total=result["total"],
            notes=[*result["notes"], *capped],
            next_before=result["next_before"],
        )
    elif group_by is not None:
        _output.table(
            result["groups"],
            [
                Col("key", group_by, kind="text", priority=0, min=16),
                *GROUP_COLUMNS,
                *{"fingerprint": ISSUE_COLUMNS, "issue": ISSUE_COLUMNS[1:]}.get(group_by, ()),
            ],
            empty="no failures match",
            wide=wide,
        )
    else:
        rows = [
            {
                **f,
                "error": f"{f['error_class'].rsplit('.', 1)[-1]}: {f['message']}",
            }
            for f in result["failures"]
        ]
        _output.table(rows, LIST_COLUMNS, empty="no failures match", wide=wide)
        if result["next_before"] is not None:
            _output.say(f"more: add --before {result['next_before']}")


def _window_notes(window: dict[str, Any] | None) -> list[str]:
    """What a windowed group count left out, and how to count everything."""
    if window is None or window["complete"]:
        return []
    return [
        f"counted the newest {window['counted']:,} matching failures (back to"
        f" {absolute(window['oldest'])}); older ones are not in these counts:"
        " --window all counts every one (seconds at a million)"
    ]


@app.command()
def show(
    ctx: typer.Context,
    failure_id: Annotated[
        int, id_argument("failure", "jobsys failures list", help="Failure id.", metavar="ID")
    ],
    json: JsonOpt = False,
) -> None:
    """Everything about one failure, traceback included; whether `jobsys retry` would retry it."""
    from jobsys.cli import _output

    # One loader for both reads: it warns once about a broken configuration.
    failure, state = run(shown(settings(ctx), read_config(ctx), failure_id))
    if json:
        _output.emit_json(failure)  # the retry state as recorded
        return
    # In words, the retry state as its job is now (README Retry): not "waiting to run"
    # and "pending" for a job that has succeeded since.
    failure["retry_state"] = state
    trace = failure.pop("traceback", None)
    _output.key_values(text_view(failure), title=f"failure {failure_id}")
    if trace:
        _output.print_text("\n" + trace)


async def shown(
    settings: Settings, load: Callable[[], Config], failure_id: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """What ``failures show`` (and the dashboard's failure detail) reads: the failure,
    with whether `jobsys retry` would retry it and if not why (``would_retry``,
    ``retry_refusal``: the rules' refusal, as the web console's failure page says it),
    and its retry state as true now (the failure keeps the one recorded)."""
    from jobsys.retry.verdict import failure_verdict

    failure, state, refused = await failure_verdict(settings, load, failure_id)
    failure.update(verdict_keys(refused))
    return failure, state


def verdict_keys(refused: Decision | None) -> dict[str, Any]:
    """``--json``'s ``would_retry`` and ``retry_refusal`` (``{decision, detail}`` or None)
    for a refusal of ``rules.refusal_known`` (None: none)."""
    return {
        "would_retry": refused is None,
        "retry_refusal": (
            {"decision": refused.decision, "detail": refused.detail} if refused else None
        ),
    }


def would_retry_text(refusal: dict[str, Any] | None, *, told_by: str, dry_run: str) -> str:
    """The ``would retry`` line: ``no: <decision>: <why>``, or ``yes`` as far as
    ``told_by`` tell (the ``dry_run`` command checks the rest)."""
    if refusal:
        return f"no: {refusal['decision']}: {refusal['detail']}"
    return f"yes, as far as {told_by} tell (`{dry_run}` checks the rest)"


def text_view(failure: dict[str, Any]) -> dict[str, Any]:
    """``failures show`` for a human: the issue by id, status and title; the retry
    verdict (last decision and why, by whom, when; the outcome) instead of raw JSON."""
    hidden = ("issue_id", "issue", "retry_state", "would_retry", "retry_refusal")
    out = {k: v for k, v in failure.items() if k not in hidden}
    issue = failure.get("issue")
    out["issue"] = (
        f"{issue['id']} ({issue['status'] or 'gone'}): {issue['title'] or '-'}" if issue else None
    )
    out.update(retry_lines(failure.get("retry_state") or {}, failure.get("retryable")))
    if "would_retry" in failure:
        out["would_retry"] = would_retry_text(
            failure.get("retry_refusal"),
            told_by="the failure and its job",
            dry_run=f"jobsys retry {failure['id']} --dry-run",
        )
    return out


def retry_lines(state: dict[str, Any], retryable: Any) -> dict[str, Any]:
    """A retry state as words: the last decision and why, by whom, when; the outcome;
    retries made (``failures show``, ``jobs show``), instead of its raw JSON."""
    out: dict[str, Any] = {}
    if state.get("last_decision"):
        detail = state.get("last_detail") or ""
        said = "" if detail in ("", state["last_decision"]) else f": {detail}"
        out["retry"] = (
            f"{state['last_decision']}{said} "
            f"(by {state.get('actor') or 'someone'} at {state.get('decided_at') or '-'})"
        )
    else:
        out["retry"] = "no retry decision yet" + ("" if retryable else " (not retryable)")
    if state.get("outcome"):
        out["retry_outcome"] = state["outcome"]
    if state.get("attempts"):
        out["retries_made"] = state["attempts"]
    return out
