"""Recording a failure: the row, its issue, the affected account and the live events,
in one transaction. Used by capture, the spool replay, reconciliation and (through
:func:`group_pending`) for rows other domains insert without an issue.

Lock order, always: the failure row, then one issue row, then its account entry. No
transaction ever holds two issue rows, so concurrent recorders cannot deadlock. A new
failure is recorded in one round trip (``issue_store.record_with_issue``: two
statements sent together), so a hot issue's row is held for the length of that
round trip only, and a failing job does not wait for more than one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobsys.db.query import one_round_trip
from jobsys.failures import fingerprint as fp
from jobsys.failures import issue_store, store
from jobsys.live import publish as live

if TYPE_CHECKING:
    from jobsys.config import Config

#: Default batch of ungrouped rows one :func:`group_pending` call handles.
GROUP_BATCH = 500


def fingerprint_of(row: store.FailureRow, frame: str | None = None) -> str:
    return fp.job_failure(row.task, row.error_class, row.message, frame, row.kind)


def _timeouts(lock_timeout_ms: int, statement_timeout_ms: int) -> dict[str, str]:
    # The commit stays synchronous (the server's default): once capture returns, the
    # worker trusts the row to be durable and does not spool it. An asynchronous commit
    # saved ~0.1-0.2 ms but a server crash before the WAL flush could lose the row.
    return {"lock": f"{lock_timeout_ms}ms", "statement": f"{statement_timeout_ms}ms"}


def _issue_params(row: store.FailureRow) -> dict[str, Any]:
    # An authentication issue is one login wall across every task that hit it (its
    # fingerprint leaves the task out): naming the first task or queue would mislead.
    spans_tasks = row.kind == "authentication"
    return {
        "fingerprint": row.fingerprint,
        "title": fp.job_failure_title(row.task, row.error_class, row.message, row.kind),
        "issue_task": None if spans_tasks else row.task,
        "error_class": row.error_class,
        "issue_queue": None if spans_tasks else row.queue,
        "service": row.service,
        "occurred_at": row.occurred_at,
    }


async def _count_in_issue(conn: Any, failure_id: int, row: store.FailureRow) -> int:
    """Count a stored failure in its issue: the service's open outage, else its
    fingerprint's. Returns the issue id."""
    assert row.occurred_at is not None
    issue_id = None
    if row.kind == "transient" and row.service:
        issue_id = await issue_store.join_outage(
            conn, fp.service_outage(row.service), failure_id, row.occurred_at
        )
    if issue_id is None:
        issue_id = await issue_store.upsert_failure_issue(
            conn, {**_issue_params(row), "failure_id": failure_id}
        )
    return issue_id


async def _finish(conn: Any, failure_id: int, issue_id: int, row: store.FailureRow) -> None:
    """One statement: the affected account, the failure's link, the live events."""
    await issue_store.finish_failure(
        conn,
        {
            "issue_id": issue_id,
            "account_id": row.account_id,
            "failure_id": failure_id,
            "fingerprint": row.fingerprint,
            "channel": live.CHANNEL,
            "failure_event": live.payload(
                "job_failures_changed",
                {
                    "failure_id": failure_id,
                    "issue_id": issue_id,
                    "kind": row.kind,
                    "queue": row.queue,
                },
            ),
            "issue_event": live.payload("issues_changed", {"issue_id": issue_id}),
        },
    )


def _record_params(row: store.FailureRow) -> dict[str, Any]:
    """Everything ``record_with_issue`` binds; the events get their ids in SQL."""
    return {
        **store.insert_params(row),
        **_issue_params(row),
        # A transient failure of a service joins that service's open outage, if any.
        "outage": (
            fp.service_outage(row.service) if row.kind == "transient" and row.service else None
        ),
        "channel": live.CHANNEL,
        "failure_event": live.payload(
            "job_failures_changed", {"kind": row.kind, "queue": row.queue}
        ),
        "issue_event": live.payload("issues_changed"),
    }


async def record_failure(
    conn: Any,
    row: store.FailureRow,
    config: Config | None = None,
    *,
    lock_timeout_ms: int | None = None,
    statement_timeout_ms: int | None = None,
) -> int | None:
    """Store ``row`` (args already redacted), fingerprint it if needed, count it in its
    issue (its service's open outage, else its fingerprint's), publish
    ``job_failures_changed``/``issues_changed``: one transaction, one round trip. A row
    with ``opens_issue`` False is stored and published without an issue.

    Returns the failure id, or None when that (job, attempt) was already recorded, in
    which case nothing is counted twice. With timeouts, a locked table makes this
    raise quickly instead of holding the job (callers spool the row then).
    """
    if row.fingerprint is None:
        row = replace(row, fingerprint=fingerprint_of(row))
    if row.occurred_at is None:
        row = replace(row, occurred_at=datetime.now(UTC))
    settings = None
    if lock_timeout_ms is not None:
        settings = _timeouts(lock_timeout_ms, statement_timeout_ms or 10 * lock_timeout_ms)
    if not row.opens_issue:
        return await _record_without_issue(conn, row, settings)
    found = await issue_store.record_with_issue(
        conn, store.INSERT_FAILURE_TEMPLATE, _record_params(row), settings
    )
    return found[0] if found else None


async def _record_without_issue(
    conn: Any, row: store.FailureRow, settings: dict[str, str] | None
) -> int | None:
    """The row and its ``job_failures_changed`` event, no issue: one round trip."""
    params = {
        **store.insert_params(row),
        "issue_id": None,
        "channel": live.CHANNEL,
        "failure_event": live.payload(
            "job_failures_changed", {"kind": row.kind, "queue": row.queue, "issue_id": None}
        ),
    }
    async with one_round_trip(conn):
        if settings is not None:
            await conn.execute(issue_store.SET_LOCAL_TIMEOUTS, settings)
        cur = await conn.execute(store.INSERT_FAILURE_WITHOUT_ISSUE, params)
    found = await cur.fetchone()
    if found is None:
        return None
    return int(found["id"] if isinstance(found, dict) else found[0])


async def group_pending(conn: Any, config: Config | None = None, limit: int = GROUP_BATCH) -> int:
    """Fingerprint and group failure rows inserted without an issue (the reaper's
    ``worker_lost`` rows, written with ``store.insert_failure``). Returns how many.

    One short transaction per row, so no transaction holds two issue rows."""
    grouped = 0
    while grouped < limit:
        async with conn.transaction():
            pending = await store.pending_grouping(conn, 1)
            if not pending:
                break
            data = pending[0]
            row = store.row_from_fields(data)
            row = replace(row, fingerprint=fingerprint_of(row))
            issue_id = await _count_in_issue(conn, int(data["id"]), row)
            await _finish(conn, int(data["id"]), issue_id, row)
        grouped += 1
    return grouped
