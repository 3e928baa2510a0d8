"""Operator-level issue operations behind ``jobsys issues ...``.

Every change publishes ``issues_changed``. Input is validated before any query.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobsys.db.session import command_connection
from jobsys.errors import NotFoundError, RefusedError, UsageError, not_found, unchanged
from jobsys.failures import store as failures_store
from jobsys.failures.filters import check_limit
from jobsys.failures.service import public as public_failure
from jobsys.issues import store
from jobsys.live.publish import publish
from jobsys.settings import Settings
from jobsys.timespec import parse_duration

if TYPE_CHECKING:
    from jobsys.config import Config

#: Mirrors ``jobsys.issues.models`` (a test keeps them equal) without importing SQLAlchemy.
ISSUE_KINDS = ("job_failure", "queue_health", "service_outage", "schedule_entry")
STATUS_CHOICES = tuple(store.STATUS_CLAUSES)
SHOW_FAILURES = 10
SHOW_ACCOUNTS = 50


def check_status(status: str) -> str:
    if status not in STATUS_CHOICES:
        raise UsageError(
            f"--status: {status!r} is not one of {', '.join(STATUS_CHOICES)}.",
        )
    return status


def check_kind(kind: str | None) -> str | None:
    if kind is not None and kind not in ISSUE_KINDS:
        raise UsageError(f"--kind: {kind!r} is not one of {', '.join(ISSUE_KINDS)}.")
    return kind


def _missing(issue_id: int) -> NotFoundError:
    return not_found("issue", issue_id, listed_by="jobsys issues list --status all")


async def list_issues(
    settings: Settings,
    config: Callable[[], Config],
    *,
    status: str = "open",
    kind: str | None = None,
    limit: int = 50,
    sort: str = "impact",
) -> dict[str, Any]:
    """Issues of ``status``; by default the open ones, what hurts most first
    (accounts affected, occurrences, then recency; ``sort="recent"``: recency)."""
    check_status(status)
    check_kind(kind)
    check_limit(limit)
    if sort not in store.ORDER_BY:
        raise UsageError(
            f"--sort {sort!r} is not an order.", hint=f"Use one of {', '.join(store.ORDER_BY)}."
        )
    async with command_connection(settings, config) as conn:
        rows = await store.list_issues(conn, status=status, kind=kind, limit=limit, sort=sort)
        total = (
            len(rows)
            if len(rows) < limit
            else await store.count_issues(conn, status=status, kind=kind)
        )
    return {"issues": rows, "count": len(rows), "total": total, "status": status}


async def open_outage_for(
    settings: Settings, config: Callable[[], Config], issue_id: int
) -> dict[str, Any] | None:
    """The open ``service_outage`` issue of the service ``issue_id``'s failures depend
    on (None: no service, or it is up)."""
    async with command_connection(settings, config) as conn:
        return await store.open_outage_for(conn, issue_id)


async def show_issue(
    settings: Settings, config: Callable[[], Config], issue_id: int
) -> dict[str, Any]:
    async with command_connection(settings, config) as conn:
        issue = await store.get_issue(conn, issue_id)
        if issue is None:
            raise _missing(issue_id)
        failures = await failures_store.recent_for_issue(conn, issue_id, SHOW_FAILURES)
        accounts = await store.issue_accounts(conn, issue_id, SHOW_ACCOUNTS)
    issue["recent_failures"] = [public_failure(f) for f in failures]
    issue["accounts"] = accounts
    return issue


async def _change(
    settings: Settings, config: Callable[[], Config], issue_id: int, action: str, **kwargs: Any
) -> dict[str, Any]:
    async with command_connection(settings, config) as conn, conn.transaction():
        if action == "resolve":
            row = await store.set_resolved(conn, issue_id, settings.operator)
        elif action == "mute":
            row = await store.set_muted(conn, issue_id, kwargs["seconds"], settings.operator)
        else:
            row = await store.set_open(conn, issue_id, settings.operator)
        if row is None:
            issue = await store.get_issue(conn, issue_id)
            if issue is None:
                raise _missing(issue_id)
            if action == "mute":
                raise RefusedError(
                    f"issue {issue_id} is resolved: nothing to mute; nothing was changed.",
                    hint="A resolved issue reopens by itself if it happens again (mute it "
                    f"then), or reopen it with `jobsys issues reopen {issue_id}`.",
                )
            return {**issue, "changed": False}  # already resolved, or already open
        await publish(conn, "issues_changed", {"issue_id": issue_id})
    return {**row, "changed": True}


def change_note(issue: dict[str, Any], done: str, *, title: bool = True) -> str:
    """What a resolve, mute or reopen did, for a human (the CLI, the web console and,
    without the title its row shows, the dashboard): ``issue 16 resolved: TITLE``; for
    one that found it so already (``changed`` false) that and who did it
    (:func:`jobsys.errors.unchanged`): ``issue 16 is already resolved (by alice at
    2026-12-06 03:12 UTC); nothing was changed: TITLE``."""
    subject = f"issue {issue['id']}"
    if issue.get("changed", True):
        note = f"{subject} {done}"
    elif issue["status"] != "resolved":
        note = unchanged(subject, "already open")
    else:
        reason = (issue.get("details") or {}).get("resolved_reason")
        who = reason or (f"by {issue['resolved_by']}" if issue.get("resolved_by") else None)
        note = unchanged(subject, "already resolved", who=who, at=issue.get("resolved_at"))
    return f"{note}: {issue['title']}" if title else note


async def resolve_issue(
    settings: Settings, config: Callable[[], Config], issue_id: int
) -> dict[str, Any]:
    """Resolve by hand (by ``settings.operator``); it reopens as a regression if it recurs."""
    return await _change(settings, config, issue_id, "resolve")


async def mute_issue(
    settings: Settings, config: Callable[[], Config], issue_id: int, duration: str
) -> dict[str, Any]:
    """Mute for ``duration`` (``2h``) as ``settings.operator`` (``muted_by``): still
    counted, not shown by default, then open again."""
    seconds = parse_duration(duration, "--for").total_seconds()
    return await _change(settings, config, issue_id, "mute", seconds=seconds)


async def reopen_issue(
    settings: Settings, config: Callable[[], Config], issue_id: int
) -> dict[str, Any]:
    """Reopen by hand, as ``settings.operator`` (``reopened_by``, kept while it stays open)."""
    return await _change(settings, config, issue_id, "reopen")
