"""SQL for ``jobsys_issues`` and ``jobsys_issue_accounts``. Grouping a failure into
its issue (the capture path's statements) is ``jobsys.failures.issue_store``.

Concurrency: every write locks at most one issue row, always before its
``jobsys_issue_accounts`` entry (the failure row comes first, in the failures
store), so concurrent captures never wait on each other in a cycle. Counts are
bumped inside the upsert itself, so none is lost.

A muted issue whose ``muted_until`` has passed is open again: ``EFFECTIVE_STATUS``
says so in reads, and the next write makes it so on disk.
"""

from __future__ import annotations

from typing import Any

from jobsys.db.query import fetch_all, fetch_one
from jobsys.engine.queries import RESOLVE_HEALED
from jobsys.failures.issue_store import DETAILS_ON_REOPEN, PAUSED_REASON, REOPEN

STATUS_OPEN_CLAUSE = "(status = 'open' OR (status = 'muted' AND muted_until <= now()))"
EFFECTIVE_STATUS = "CASE WHEN status = 'muted' AND muted_until <= now() THEN 'open' ELSE status END"
# Who muted an issue is kept in its details (``muted_by``), shown beside ``muted_until``;
# who reopened it by hand (``reopened_by``) while it stays open: a resolve or a mute
# drops it, and an issue that reopens by itself (DETAILS_ON_REOPEN) was reopened by no one.
COLUMNS = f"""
    id, fingerprint, kind, title, {EFFECTIVE_STATUS} AS status, muted_until,
    CASE WHEN muted_until IS NOT NULL THEN details->>'muted_by' END AS muted_by, first_seen,
    last_seen, occurrences, affected_accounts, latest_failure_id, regression, resolved_at,
    resolved_by, CASE WHEN status = 'open' THEN details->>'reopened_by' END AS reopened_by,
    task, error_class, queue, service, details - 'muted_by' - 'reopened_by' AS details
"""

# A breach upserted is a problem now: a service outage's last ``recovered_at`` (written
# when it resolved) goes, or a reopened outage reads "recovered at" while it is down.
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
    details = {DETAILS_ON_REOPEN} - 'recovered_at' || EXCLUDED.details,
    {REOPEN}
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

# Health issues no longer breached only because their queue is paused resolve themselves,
# saying so (``resolved_reason``): they reopen as no regression (REOPEN).
RESOLVE_PAUSED = f"""
UPDATE jobsys_issues
   SET status = 'resolved', resolved_at = now(), resolved_by = 'auto', muted_until = NULL,
       details = details || jsonb_build_object('resolved_reason', '{PAUSED_REASON}'::text)
 WHERE kind = %(kind)s AND status IN ('open', 'muted')
   AND fingerprint = ANY(%(paused)s::text[])
RETURNING id, fingerprint
"""

RESOLVE_QUIET = """
UPDATE jobsys_issues
   SET status = 'resolved', resolved_at = now(), resolved_by = 'auto'
 WHERE kind = 'job_failure' AND status = 'open'
   AND last_seen < now() - make_interval(secs => %(seconds)s)
RETURNING id
"""


# An open service outage of the service an issue's failures depend on.
OPEN_OUTAGE_FOR = """
SELECT o.id, o.title, o.service, o.first_seen
  FROM jobsys_issues i
  JOIN jobsys_issues o ON o.kind = 'service_outage' AND o.service = i.service
   AND o.status IN ('open', 'muted')
 WHERE i.id = %(id)s
 ORDER BY o.first_seen
 LIMIT 1
"""

#: ``issues list`` order: what hurts most first (accounts, occurrences), then recency.
ORDER_BY = {
    "impact": "affected_accounts DESC, occurrences DESC, last_seen DESC, id DESC",
    "recent": "last_seen DESC, id DESC",
}
LIST_ISSUES = f"""
SELECT {COLUMNS}
  FROM jobsys_issues
 WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
   AND {{status_clause}}
 ORDER BY {{order}}
 LIMIT %(limit)s
"""
COUNT_ISSUES = """
SELECT count(*) AS n
  FROM jobsys_issues
 WHERE (%(kind)s::text IS NULL OR kind = %(kind)s)
   AND {status_clause}
"""
STATUS_CLAUSES = {
    "open": STATUS_OPEN_CLAUSE,
    "muted": "(status = 'muted' AND muted_until > now())",
    "resolved": "status = 'resolved'",
    "all": "TRUE",
}

GET_ISSUE = f"SELECT {COLUMNS} FROM jobsys_issues WHERE id = %(id)s"

# Account ids are text (an application may use any form); numeric ones in numeric order.
ISSUE_ACCOUNTS = """
SELECT account_id FROM jobsys_issue_accounts
 WHERE issue_id = %(id)s
 ORDER BY account_id !~ '^[0-9]{1,18}$',
          CASE WHEN account_id ~ '^[0-9]{1,18}$' THEN account_id::bigint END,
          account_id
 LIMIT %(limit)s
"""

# Resolving a resolved issue, or reopening an open one, writes nothing: who resolved it
# and when (or that it healed) stay as they were. An operator's resolve is no 'healed'
# (a resolved_reason left on an open issue by a mute of a resolved one, before 57e7d06).
SET_RESOLVED = f"""
UPDATE jobsys_issues
   SET status = 'resolved', resolved_at = now(), resolved_by = %(actor)s, muted_until = NULL,
       details = details - 'muted_by' - 'reopened_by' - 'resolved_reason'
 WHERE id = %(id)s AND status <> 'resolved'
RETURNING {COLUMNS}
"""

# A resolved issue is not muted: when the mute ran out it would read open again, a
# healed issue back among those that need someone (it reopens by itself if it recurs).
SET_MUTED = f"""
UPDATE jobsys_issues
   SET status = 'muted', muted_until = now() + make_interval(secs => %(seconds)s),
       details = details - 'reopened_by' || jsonb_build_object('muted_by', %(actor)s::text)
 WHERE id = %(id)s AND status <> 'resolved'
RETURNING {COLUMNS}
"""

SET_OPEN = f"""
UPDATE jobsys_issues
   SET status = 'open', muted_until = NULL, resolved_at = NULL, resolved_by = NULL,
       details = details - 'resolved_reason' - 'muted_by'
           || jsonb_build_object('reopened_by', %(actor)s::text)
 WHERE id = %(id)s AND NOT {STATUS_OPEN_CLAUSE}
RETURNING {COLUMNS}
"""


async def upsert_health_issue(conn: Any, params: dict[str, Any]) -> dict[str, Any]:
    row = await fetch_one(conn, UPSERT_HEALTH_ISSUE, params)
    assert row is not None
    return row


async def resolve_healthy(
    conn: Any, kind: str, prefix: str, active: list[str], details: str = "{}"
) -> list[dict[str, Any]]:
    params = {"kind": kind, "prefix": prefix + "%", "active": active, "details": details}
    return await fetch_all(conn, RESOLVE_HEALTHY, params)


async def resolve_paused(conn: Any, kind: str, paused: list[str]) -> list[dict[str, Any]]:
    return await fetch_all(conn, RESOLVE_PAUSED, {"kind": kind, "paused": paused})


async def resolve_quiet(conn: Any, seconds: float) -> list[int]:
    return [int(r["id"]) for r in await fetch_all(conn, RESOLVE_QUIET, {"seconds": seconds})]


async def resolve_healed(conn: Any) -> list[int]:
    return [int(r["id"]) for r in await fetch_all(conn, RESOLVE_HEALED, {})]


async def open_outage_for(conn: Any, issue_id: int) -> dict[str, Any] | None:
    return await fetch_one(conn, OPEN_OUTAGE_FOR, {"id": issue_id})


async def list_issues(
    conn: Any, *, status: str, kind: str | None, limit: int, sort: str = "impact"
) -> list[dict[str, Any]]:
    sql = LIST_ISSUES.format(status_clause=STATUS_CLAUSES[status], order=ORDER_BY[sort])
    return await fetch_all(conn, sql, {"kind": kind, "limit": limit})


async def count_issues(conn: Any, *, status: str, kind: str | None) -> int:
    sql = COUNT_ISSUES.format(status_clause=STATUS_CLAUSES[status])
    row = await fetch_one(conn, sql, {"kind": kind})
    return int(row["n"]) if row else 0


async def get_issue(conn: Any, issue_id: int) -> dict[str, Any] | None:
    return await fetch_one(conn, GET_ISSUE, {"id": issue_id})


async def issue_accounts(conn: Any, issue_id: int, limit: int) -> list[str]:
    rows = await fetch_all(conn, ISSUE_ACCOUNTS, {"id": issue_id, "limit": limit})
    return [str(r["account_id"]) for r in rows]


async def set_resolved(conn: Any, issue_id: int, actor: str) -> dict[str, Any] | None:
    return await fetch_one(conn, SET_RESOLVED, {"id": issue_id, "actor": actor})


async def set_muted(conn: Any, issue_id: int, seconds: float, actor: str) -> dict[str, Any] | None:
    return await fetch_one(conn, SET_MUTED, {"id": issue_id, "seconds": seconds, "actor": actor})


async def set_open(conn: Any, issue_id: int, actor: str) -> dict[str, Any] | None:
    return await fetch_one(conn, SET_OPEN, {"id": issue_id, "actor": actor})
