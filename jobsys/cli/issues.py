"""``jobsys issues``: failures grouped by fingerprint, queue health and service outages."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from jobsys.cli._context import run, settings

app = typer.Typer(help="Issues: de-duplicated problems with a lifecycle (open, muted, resolved).")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON document.")]
IdArg = Annotated[int, typer.Argument(metavar="ID", help="Issue id.")]
LIST_COLUMNS = (
    "id",
    "kind",
    "status",
    "title",
    ("occurrences", "count"),
    ("affected_accounts", "accounts"),
    ("last_seen", "last seen (UTC)"),
    "regression",
)


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[str, typer.Option(help="open, muted, resolved or all.")] = "open",
    kind: Annotated[
        str | None, typer.Option(help="job_failure, queue_health or service_outage.")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many issues.")] = 50,
    json: JsonOpt = False,
) -> None:
    """List issues, most recently seen first (open ones by default)."""
    from jobsys.cli import _output
    from jobsys.issues import service

    service.check_status(status)
    service.check_kind(kind)
    result = run(service.list_issues(settings(ctx), status=status, kind=kind, limit=limit))
    if json:
        _output.emit_json(result)
    else:
        _output.table(result["issues"], LIST_COLUMNS, empty=f"no {status} issues")


@app.command()
def show(ctx: typer.Context, issue_id: IdArg, json: JsonOpt = False) -> None:
    """One issue with its recent failures and affected accounts."""
    from jobsys.cli import _output
    from jobsys.issues import service

    issue = run(service.show_issue(settings(ctx), issue_id))
    if json:
        _output.emit_json(issue)
        return
    failures = issue.pop("recent_failures")
    accounts = issue.pop("accounts")
    _output.key_values(issue, title=f"issue {issue_id}")
    _output.table(
        failures,
        ["id", ("occurred_at", "when (UTC)"), "task", ("account_id", "account"), "message"],
        title="recent failures",
        empty="no failures recorded",
    )
    if accounts:
        _output.print_text("affected accounts: " + ", ".join(accounts))


def _done(result: dict[str, Any], json: bool, verb: str) -> None:
    from jobsys.cli import _output

    if json:
        _output.emit_json(result)
    else:
        _output.say(f"issue {result['id']} {verb}: {result['title']}")


@app.command()
def resolve(ctx: typer.Context, issue_id: IdArg, json: JsonOpt = False) -> None:
    """Resolve an issue (it reopens, marked a regression, if it happens again)."""
    from jobsys.issues import service

    _done(run(service.resolve_issue(settings(ctx), issue_id)), json, "resolved")


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
    result = run(service.mute_issue(settings(ctx), issue_id, for_))
    _done(result, json, f"muted until {result['muted_until']:%Y-%m-%d %H:%M} UTC")


@app.command()
def reopen(ctx: typer.Context, issue_id: IdArg, json: JsonOpt = False) -> None:
    """Reopen a resolved or muted issue."""
    from jobsys.issues import service

    _done(run(service.reopen_issue(settings(ctx), issue_id)), json, "reopened")
