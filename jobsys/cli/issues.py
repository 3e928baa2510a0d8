"""``jobsys issues``: failures grouped by fingerprint, queue health and service outages."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any

import typer

from jobsys.cli._context import read_config, run, settings
from jobsys.cli._options import JsonOpt, WideOpt, id_argument
from jobsys.cli._table import Col
from jobsys.clock import utc_text

app = typer.Typer(help="Issues: de-duplicated problems with a lifecycle (open, muted, resolved).")

IdArg = Annotated[int, id_argument("issue", "jobsys issues list", help="Issue id.", metavar="ID")]
LIST_COLUMNS = (
    Col("id", kind="id", priority=0),
    # At 80 columns (the dashboard too) the title is cut to leave room for the accounts
    # an issue hurts, what the list is ordered by, and when it was last seen.
    Col("title", kind="text", priority=0, min=20, want=34),
    Col("occurrences", "count", kind="number", priority=1),
    Col("affected_accounts", "accounts", kind="number", priority=1),
    Col("last_seen", kind="time", priority=1),
    Col("kind", priority=3),
    Col("status", priority=4),
    Col("regression", priority=5),
    Col("first_seen", kind="time", wide_only=True),
    Col("muted_until", kind="time", wide_only=True),
)


def list_columns(status: str) -> tuple[Col, ...]:
    """The list's columns: beside open issues only, their status says nothing; in any
    other view (``--all``, muted, resolved) it is what tells them apart, so it keeps
    its place at 80 columns, as the id and title do."""
    if status == "open":
        return LIST_COLUMNS
    return tuple(
        dataclasses.replace(c, priority=0) if c.key == "status" else c for c in LIST_COLUMNS
    )


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[str, typer.Option(help="open, muted, resolved or all.")] = "open",
    all_: Annotated[
        bool, typer.Option("--all", help="Every issue, whatever its status (--status all).")
    ] = False,
    sort: Annotated[
        str, typer.Option(help="impact (accounts, occurrences, recency) or recent.")
    ] = "impact",
    kind: Annotated[
        str | None,
        typer.Option(help="job_failure, queue_health, service_outage or schedule_entry."),
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many issues.")] = 50,
    wide: WideOpt = False,
    json: JsonOpt = False,
) -> None:
    """What needs someone: open issues, most accounts and occurrences first (issues
    whose failures were all retried and succeeded resolve themselves as healed);
    --all for every issue."""
    from jobsys.cli import _output
    from jobsys.issues import service

    status = "all" if all_ else status
    service.check_status(status)
    service.check_kind(kind)
    result = run(
        service.list_issues(
            settings(ctx), read_config(ctx), status=status, kind=kind, limit=limit, sort=sort
        )
    )
    if json:
        _output.emit_list(result["issues"], total=result["total"], status=status)
    else:
        rows = [{**i, "status": status_text(i)} for i in result["issues"]]
        _output.table(rows, list_columns(status), empty=f"no {status} issues", wide=wide)


@app.command()
def show(ctx: typer.Context, issue_id: IdArg, json: JsonOpt = False) -> None:
    """One issue with its recent failures and affected accounts."""
    from jobsys.cli import _output
    from jobsys.issues import service

    issue = run(service.show_issue(settings(ctx), read_config(ctx), issue_id))
    if json:
        _output.emit_json(issue)
        return
    failures = issue.pop("recent_failures")
    accounts = issue.pop("accounts")
    issue["status"] = status_text(issue)
    _output.key_values(issue, title=f"issue {issue_id}")
    _output.table(
        failures,
        [
            Col("id", kind="id", priority=0),
            Col("occurred_at", "when", kind="time", priority=0),
            Col("task", priority=1),
            Col("account_id", "account", priority=2),
            Col("message", kind="text", priority=0),
        ],
        title="recent failures",
        empty="no failures recorded",
        wide=None,
    )
    if accounts:
        _output.line("affected accounts: " + ", ".join(accounts))


def status_text(issue: dict[str, Any]) -> str:
    """``resolved (healed)``: the status, and why when it resolved by itself."""
    reason = (issue.get("details") or {}).get("resolved_reason")
    return (
        f"{issue['status']} ({reason})"
        if issue["status"] == "resolved" and reason
        else (issue["status"])
    )


def _done(result: dict[str, Any], json: bool, verb: str) -> None:
    from jobsys.cli import _output
    from jobsys.issues.service import change_note

    _output.result(result, json=json, line=change_note(result, verb))


@app.command()
def resolve(ctx: typer.Context, issue_id: IdArg, json: JsonOpt = False) -> None:
    """Resolve an issue (it reopens, marked a regression, if it happens again)."""
    from jobsys.issues import service

    _done(run(service.resolve_issue(settings(ctx), read_config(ctx), issue_id)), json, "resolved")


@app.command()
def mute(
    ctx: typer.Context,
    issue_id: IdArg,
    for_: Annotated[str, typer.Option("--for", help="How long: 30m, 2h, 7d.")],
    json: JsonOpt = False,
) -> None:
    """Mute an issue for a while: still counted, hidden from the default list."""
    from jobsys.issues import service
    from jobsys.timespec import parse_duration

    parse_duration(for_, "--for")
    result = run(service.mute_issue(settings(ctx), read_config(ctx), issue_id, for_))
    _done(result, json, f"muted until {utc_text(result['muted_until'])}")


@app.command()
def reopen(ctx: typer.Context, issue_id: IdArg, json: JsonOpt = False) -> None:
    """Reopen a resolved or muted issue."""
    from jobsys.issues import service

    _done(run(service.reopen_issue(settings(ctx), read_config(ctx), issue_id)), json, "reopened")
