"""SQL for ``jobsys_issues`` and ``jobsys_issue_accounts``: the one place that touches them.

Concurrency: every write locks at most one issue row, always before its
``jobsys_issue_accounts`` entry (the failure row comes first, in the failures
store), so concurrent captures never wait on each other in a cycle. Counts are
bumped inside the upsert itself, so none is lost.

A muted issue whose ``muted_until`` has passed is open again: ``EFFECTIVE_STATUS``
says so in reads, and the next write makes it so on disk.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobsys.db.query import execute, fetch_all, fetch_one
from jobsys.failures.store import INSERT_FAILURE

EFFECTIVE_STATUS = "CASE WHEN status = 'muted' AND muted_until <= now() THEN 'open' ELSE status END"
COLUMNS = f"""
    id, fingerprint, kind, title, {EFFECTIVE_STATUS} AS status, muted_until, first_seen,
    last_seen, occurrences, affected_accounts, latest_failure_id, regression, resolved_at,
    resolved_by, task, error_class, queue, service, details
"""

# A resolved issue that happens again (after it was resolved) reopens as a regression;
# an expired mute opens; an active mute stays muted but keeps counting.
_REOPEN = """
    status = CASE
        WHEN i.status = 'resolved' AND EXCLUDED.last_seen > COALESCE(i.resolved_at, '-infinity')
            THEN 'open'
        WHEN i.status = 'muted' AND i.muted_until <= now() THEN 'open'
        ELSE i.status END,
    regression = i.regression OR (
        i.status = 'resolved' AND EXCLUDED.last_seen > COALESCE(i.resolved_at, '-infinity')),
    muted_until = CASE WHEN i.status = 'muted' AND i.muted_until > now()
        THEN i.muted_until END,
    resolved_at = CASE WHEN i.status = 'resolved'
        AND EXCLUDED.last_seen <= COALESCE(i.resolved_at, '-infinity') THEN i.resolved_at END,
    resolved_by = CASE WHEN i.status = 'resolved'
        AND EXCLUDED.last_seen <= COALESCE(i.resolved_at, '-infinity') THEN i.resolved_by END
"""

_COUNT_IN_ISSUE = f"""
ON CONFLICT (fingerprint) DO UPDATE SET
    occurrences = i.occurrences + 1,
    first_seen = LEAST(i.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(i.last_seen, EXCLUDED.last_seen),
    latest_failure_id = CASE WHEN EXCLUDED.last_seen >= i.last_seen
        THEN EXCLUDED.latest_failure_id ELSE i.latest_failure_id END,
    {_REOPEN}
"""
UPSERT_FAILURE_ISSUE = f"""
INSERT INTO jobsys_issues AS i (
    fingerprint, kind, title, status, occurrences, latest_failure_id, task, error_class,
    queue, service, first_seen, last_seen
) VALUES (
    %(fingerprint)s, 'job_failure', %(title)s, 'open', 1, %(failure_id)s, %(task)s,
    %(error_class)s, %(queue)s, %(service)s, %(occurred_at)s, %(occurred_at)s
)
{_COUNT_IN_ISSUE}
RETURNING id
"""

# The common case in ONE statement (one round trip): insert the failure and, only if
# that attempt was new, count it in its fingerprint's issue.
RECORD_WITH_ISSUE = f"""
WITH f AS ({INSERT_FAILURE})
INSERT INTO jobsys_issues AS i (
    fingerprint, kind, title, status, occurrences, latest_failure_id, task, error_class,
    queue, service, first_seen, last_seen
)
SELECT %(fingerprint)s, 'job_failure', %(title)s, 'open', 1, f.id, %(task)s,
       %(error_class)s, %(queue)s, %(service)s, %(occurred_at)s, %(occurred_at)s
  FROM f
{_COUNT_IN_ISSUE}
RETURNING i.id AS issue_id, (SELECT id FROM f) AS failure_id
"""

# A failure joins its service's outage only while that outage is open (or muted).
JOIN_OUTAGE = """
UPDATE jobsys_issues
   SET occurrences = occurrences + 1,
       last_seen = GREATEST(last_seen, %(occurred_at)s),
       latest_failure_id = CASE WHEN %(occurred_at)s >= last_seen
           THEN %(failure_id)s ELSE latest_failure_id END
 WHERE fingerprint = %(fingerprint)s AND status IN ('open', 'muted')
RETURNING id
"""

ADD_ACCOUNT = """
WITH added AS (
    INSERT INTO jobsys_issue_accounts (issue_id, account_id)
    VALUES (%(issue_id)s, %(account_id)s)
    ON CONFLICT DO NOTHING
    RETURNING issue_id
)
UPDATE jobsys_issues SET affected_accounts = affected_accounts + 1
 WHERE id IN (SELECT issue_id FROM added)
"""

# After the issue row is locked, everything else in ONE round trip (the lock is held
# until commit): the account entry and its counter, the failure's link, the events.
FINISH_FAILURE = """
WITH added AS (
    INSERT INTO jobsys_issue_accounts (issue_id, account_id)
    SELECT %(issue_id)s, %(account_id)s WHERE %(account_id)s::text IS NOT NULL
    ON CONFLICT DO NOTHING
    RETURNING issue_id
), bumped AS (
    UPDATE jobsys_issues SET affected_accounts = affected_accounts + 1
     WHERE id IN (SELECT issue_id FROM added)
), linked AS (
    UPDATE jobsys_failures SET issue_id = %(issue_id)s, fingerprint = %(fingerprint)s
     WHERE id = %(failure_id)s
)
SELECT pg_notify(%(channel)s, %(failure_event)s), pg_notify(%(channel)s, %(issue_event)s)
"""

UPSERT_HEALTH_ISSUE = f"""
INSERT INTO jobsys_issues AS i (
    fingerprint, kind, title, status, occurrences, queue, service, details,
    first_seen, last_seen
) VALUES (
    %(fingerprint)s, %(kind)s, %(title)s, 'open', 1, %(queue)s, %(service)s,
    %(details)s::jsonb, now(), now()
)
ON CONFLICT (fingerprint) DO UPDATE SET
    occurrences = i.occurrences + 1,
    last_seen = EXCLUDED.last_seen,
    title = EXCLUDED.title,
    details = i.details || EXCLUDED.details,
    {_REOPEN}
RETURNING id, status, (xmax = 0) AS created
"""

# Health issues no longer breached resolve themselves.
RESOLVE_HEALTHY = """
UPDATE jobsys_issues
   SET status = 'resolved', resolved_at = now(), resolved_by = 'auto', muted_until = NULL,
       details = details || %(details)s::jsonb
 WHERE kind = %(kind)s AND status IN ('open', 'muted')
   AND fingerprint LIKE %(prefix)s
   AND NOT (fingerprint = ANY(%(active)s::text[]))
RETURNING id, fingerprint
"""

RESOLVE_QUIET = """
UPDATE jobsys_issues
   SET status = 'resolved', resolved_at = now(), resolved_by = 'auto'
 WHERE kind = 'job_failure' AND status = 'open'
   AND last_seen < now() - make_interval(secs => %(seconds)s)
RETURNING id
"""

LIST_ISSUES = f"""
SELECT {COLUMNS}
  FROM jobsys_issues
 WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
   AND {{status_clause}}
 ORDER BY last_seen DESC, id DESC
 LIMIT %(limit)s
"""
STATUS_CLAUSES = {
    "open": "(status = 'open' OR (status = 'muted' AND muted_until <= now()))",
    "muted": "(status = 'muted' AND muted_until > now())",
    "resolved": "status = 'resolved'",
    "all": "TRUE",
}

GET_ISSUE = f"SELECT {COLUMNS} FROM jobsys_issues WHERE id = %(id)s"

ISSUE_ACCOUNTS = """
SELECT account_id FROM jobsys_issue_accounts
 WHERE issue_id = %(id)s ORDER BY account_id LIMIT %(limit)s
"""

SET_RESOLVED = f"""
UPDATE jobsys_issues
   SET status = 'resolved', resolved_at = now(), resolved_by = %(actor)s, muted_until = NULL
 WHERE id = %(id)s
RETURNING {COLUMNS}
"""

SET_MUTED = f"""
UPDATE jobsys_issues
   SET status = 'muted', muted_until = now() + make_interval(secs => %(seconds)s)
 WHERE id = %(id)s
RETURNING {COLUMNS}
"""

SET_OPEN = f"""
UPDATE jobsys_issues
   SET status = 'open', muted_until = NULL, resolved_at = NULL, resolved_by = NULL
 WHERE id = %(id)s
RETURNING {COLUMNS}
"""


async def upsert_failure_issue(conn: Any, params: dict[str, Any]) -> int:
    row = await fetch_one(conn, UPSERT_FAILURE_ISSUE, params)
    assert row is not None  # an upsert always returns its row
    return int(row["id"])


async def record_with_issue(conn: Any, params: dict[str, Any]) -> tuple[int, int] | None:
    """(failure id, issue id), or None when that attempt was already recorded."""
    row = await fetch_one(conn, RECORD_WITH_ISSUE, params)
    return (int(row["failure_id"]), int(row["issue_id"])) if row else None


async def join_outage(
    conn: Any, fingerprint: str, failure_id: int, occurred_at: datetime
) -> int | None:
    row = await fetch_one(
        conn,
        JOIN_OUTAGE,
        {"fingerprint": fingerprint, "failure_id": failure_id, "occurred_at": occurred_at},
    )
    return int(row["id"]) if row else None


async def add_account(conn: Any, issue_id: int, account_id: str) -> bool:
    """Record that ``account_id`` is affected; True when it is new for this issue."""
    return await execute(conn, ADD_ACCOUNT, {"issue_id": issue_id, "account_id": account_id}) > 0


async def finish_failure(conn: Any, params: dict[str, Any]) -> None:
    await conn.execute(FINISH_FAILURE, params)  # no result wanted: stays pipelined


async def upsert_health_issue(conn: Any, params: dict[str, Any]) -> dict[str, Any]:
    row = await fetch_one(conn, UPSERT_HEALTH_ISSUE, params)
    assert row is not None
    return row


async def resolve_healthy(
    conn: Any, kind: str, prefix: str, active: list[str], details: str = "{}"
) -> list[dict[str, Any]]:
    params = {"kind": kind, "prefix": prefix + "%", "active": active, "details": details}
    return await fetch_all(conn, RESOLVE_HEALTHY, params)


async def resolve_quiet(conn: Any, seconds: float) -> list[int]:
    return [int(r["id"]) for r in await fetch_all(conn, RESOLVE_QUIET, {"seconds": seconds})]


async def list_issues(
    conn: Any, *, status: str, kind: str | None, limit: int
) -> list[dict[str, Any]]:
    sql = LIST_ISSUES.format(status_clause=STATUS_CLAUSES[status])
    return await fetch_all(conn, sql, {"kind": kind, "limit": limit})


async def get_issue(conn: Any, issue_id: int) -> dict[str, Any] | None:
    return await fetch_one(conn, GET_ISSUE, {"id": issue_id})


async def issue_accounts(conn: Any, issue_id: int, limit: int) -> list[str]:
    rows = await fetch_all(conn, ISSUE_ACCOUNTS, {"id": issue_id, "limit": limit})
    return [str(r["account_id"]) for r in rows]


async def set_resolved(conn: Any, issue_id: int, actor: str) -> dict[str, Any] | None:
    return await fetch_one(conn, SET_RESOLVED, {"id": issue_id, "actor": actor})


async def set_muted(conn: Any, issue_id: int, seconds: float) -> dict[str, Any] | None:
    return await fetch_one(conn, SET_MUTED, {"id": issue_id, "seconds": seconds})


async def set_open(conn: Any, issue_id: int) -> dict[str, Any] | None:
    return await fetch_one(conn, SET_OPEN, {"id": issue_id})
