"""SQL for ``jobsys_failures``: the one place that writes and reads failure rows.

``insert_failure`` is idempotent per (job_id, attempt): capture, reconciliation and
the reaper may all try to record the same attempt; the first one wins.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

from jobsys.db.query import fetch_all, fetch_one, like_contains
from jobsys.engine.queries import EVENTS_SETTLED, EVENTS_START, UNRECORDED_ATTEMPTS

#: The insert, with ``{issue_id}`` left open: a bound parameter here, an expression
#: where the issue is looked up in the same statement (``issue_store.record_with_issue_query``).
INSERT_FAILURE_TEMPLATE = """
INSERT INTO jobsys_failures (
    job_id, task, queue, lane, attempt, args, error_class, message, traceback,
    account_id, profile_id, kind, reason, retryable, will_retry, worker, host, pid, service,
    fingerprint, issue_id, pipeline_step_id, occurred_at
) VALUES (
    %(job_id)s, %(task)s, %(queue)s, %(lane)s, %(attempt)s, %(args)s::jsonb, %(error_class)s,
    %(message)s, %(traceback)s, %(account_id)s, %(profile_id)s, %(kind)s, %(reason)s,
    %(retryable)s, %(will_retry)s, %(worker)s, %(host)s, %(pid)s, %(service)s, %(fingerprint)s,
    {issue_id}, %(pipeline_step_id)s, COALESCE(%(occurred_at)s, now())
)
ON CONFLICT (job_id, attempt) DO NOTHING
RETURNING id
"""
INSERT_FAILURE = INSERT_FAILURE_TEMPLATE.format(issue_id="%(issue_id)s")
#: A failure counted in no issue (``FailureRow.opens_issue`` False): the row, with its
#: fingerprint (so issue grouping never picks it up later), and its live event.
INSERT_FAILURE_WITHOUT_ISSUE = f"""
WITH f AS ({INSERT_FAILURE})
SELECT id, pg_notify(%(channel)s,
                     (%(failure_event)s::jsonb || jsonb_build_object('failure_id', id))::text)
  FROM f
"""


@dataclass
class FailureRow:
    """One failed attempt, ready to store. ``args`` must already be redacted."""

    job_id: int
    task: str
    queue: str
    attempt: int
    error_class: str
    message: str
    kind: str
    retryable: bool
    reason: str = "exception"
    lane: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None
    account_id: str | None = None
    profile_id: str | None = None
    will_retry: bool = False
    worker: str | None = None
    #: The host and pid of the process that ran the attempt.
    host: str | None = None
    pid: int | None = None
    service: str | None = None
    fingerprint: str | None = None
    issue_id: int | None = None
    pipeline_step_id: int | None = None
    #: When the attempt failed (None: now). Replayed and reconciled rows keep their time.
    occurred_at: datetime | None = None
    #: False: the row is recorded (``failures list`` shows it) but opens, reopens or
    #: counts in no issue. A job a deploy's shutdown cut and requeued (its task is
    #: rerun_safe) is routine, not a problem to alert on.
    opens_issue: bool = True


_FIELDS = tuple(f.name for f in fields(FailureRow))


def row_from_fields(data: dict[str, Any]) -> FailureRow:
    """A row from ``data`` (a spooled line, a database row), keeping only the fields
    this version knows: a line spooled by a newer version (a field added since) still
    replays after a rollback instead of being buried as poison."""
    return FailureRow(**{k: v for k, v in data.items() if k in _FIELDS})


def insert_params(row: FailureRow) -> dict[str, Any]:
    # Field by field, not ``asdict``: that deep-copies ``args`` only to serialise it.
    params = {name: getattr(row, name) for name in _FIELDS}
    params["args"] = json.dumps(row.args, default=str)
    return params


async def insert_failure(conn: Any, row: FailureRow) -> int | None:
    """Insert ``row``; return its id, or None when that attempt was already recorded."""
    cur = await conn.execute(INSERT_FAILURE, insert_params(row))
    found = await cur.fetchone()
    if found is None:
        return None
    return int(found["id"] if isinstance(found, dict) else found[0])


#: What ``failures list`` / ``show`` return (``args`` and ``traceback`` only in ``show``).
LIST_COLUMNS = """
    id, job_id, task, queue, lane, kind, reason, retryable, will_retry, error_class,
    message, account_id, profile_id, attempt, worker, host, pid, service, fingerprint, issue_id,
    pipeline_step_id, retry_state, occurred_at
"""
SHOW_COLUMNS = LIST_COLUMNS + ", args, traceback"

#: One fragment per filter (``jobsys.failures.filters``) over ``jobsys_failures f``, each
#: on bound parameters only; shared with ``jobsys retry --all``. Keyset pagination walks
#: ``ix_jobsys_failures_occurred`` (occurred_at DESC, id DESC).
FILTER_CLAUSES = {
    "kind": "f.kind = %(kind)s",
    "task": "f.task = %(task)s",
    "queue": "f.queue = %(queue)s",
    "lane": "f.lane = %(lane)s",
    "account": "f.account_id = %(account)s",
    "profile": "f.profile_id = %(profile)s",
    "issue": "f.issue_id = %(issue)s",
    "since": "f.occurred_at >= %(since)s",
    "until": "f.occurred_at < %(until)s",
    "retryable": "f.retryable = %(retryable)s",
    "before": "(f.occurred_at, f.id) < (%(before_at)s, %(before)s)",
    "error": "(f.message ILIKE {pattern} OR f.error_class ILIKE {pattern})".format(
        pattern=like_contains("error")
    ),
}
GROUP_COLUMNS = {
    "fingerprint": "fingerprint",
    "task": "task",
    "queue": "queue",
    "kind": "kind",
    "issue": "issue_id",
}

#: Newest first (``ix_jobsys_failures_occurred``).
LIST_ORDER = "occurred_at DESC, id DESC"

#: ``--error TEXT`` (a pg_trgm search) in a list's order, whatever the planner guesses.
#: Its row estimates for a substring are poor, and ordered lists tempt it to walk the
#: order's index filtering every row: with a text on 0.1% of 1,000,000 failures that
#: read 50,000 rows (62-411 ms); on a rarer or older text, the whole table. So the
#: statement first takes up to %(few)s matches by the trigram indexes (bitmap scans,
#: no order): fewer than that, and they are all the matches, sorted here (time grows
#: with the matches, at most %(few)s rows); as many, and the text is common enough for
#: the index walk to meet %(limit)s matches within about %(limit)s x rows / %(few)s rows.
#: Only one branch runs (its one-time filter). ``{keys}``: the order's columns.
BY_TEXT = """
WITH few AS MATERIALIZED (
    SELECT {keys} FROM jobsys_failures f WHERE {where} LIMIT %(few)s
)
SELECT * FROM (
  (SELECT {columns} FROM jobsys_failures f
    WHERE (SELECT count(*) FROM few) < %(few)s
      AND f.id IN (SELECT id FROM few ORDER BY {order} LIMIT %(limit)s)
    ORDER BY {order} LIMIT %(limit)s)
  UNION ALL
  (SELECT {columns} FROM jobsys_failures f
    WHERE (SELECT count(*) FROM few) >= %(few)s AND {where}
    ORDER BY {order} LIMIT %(limit)s)
) u
ORDER BY {order}
"""
PLAIN_ORDERED = """
SELECT {columns} FROM jobsys_failures f
 WHERE {where}
 ORDER BY {order}
 LIMIT %(limit)s
"""
#: Matches taken by the trigram indexes before the walk is preferred: the two costs meet
#: near sqrt(limit x rows x walk/bitmap cost per row) (~5,000 at 1,000,000 failures).
BY_TEXT_FEW = 5_000


def ordered(columns: str, where: str, filters: dict[str, Any], order: str, keys: str) -> str:
    """``SELECT columns ... WHERE where ORDER BY order LIMIT %(limit)s``; with ``--error``
    the :data:`BY_TEXT` shape (bind ``few``: :func:`text_params`)."""
    shape = PLAIN_ORDERED if filters.get("error") is None else BY_TEXT
    return shape.format(columns=columns, where=where, order=order, keys=keys)


def text_params(params: dict[str, Any]) -> dict[str, Any]:
    return {**params, "few": BY_TEXT_FEW}


# How many failures match, counted up to %(cap)s (a list's total; past the cap, unknown).
COUNT_FAILURES = """
SELECT count(*) AS n FROM (SELECT 1 FROM jobsys_failures f WHERE {where} LIMIT %(cap)s) m
"""
COUNT_GROUPS = """
SELECT count(*) AS n FROM (
  SELECT 1 FROM jobsys_failures f WHERE {where} GROUP BY {column} LIMIT %(cap)s
) m
"""

GROUP_FAILURES = """
SELECT {column} AS key, count(*) AS occurrences, max(occurred_at) AS last_seen,
       count(DISTINCT account_id) AS affected_accounts
  FROM jobsys_failures f
 WHERE {where}
 GROUP BY {column}
 ORDER BY count(*) DESC, {column} NULLS LAST
 LIMIT %(limit)s
"""
# Groups by fingerprint or issue name their issue: the newest one the group's failures
# were counted in (issue ids only grow), with its title, looked up per group shown.
GROUP_FAILURES_WITH_ISSUE = """
SELECT g.key, g.occurrences, g.last_seen, g.affected_accounts,
       i.id AS issue_id, i.title AS issue_title
  FROM (
    SELECT {column} AS key, count(*) AS occurrences, max(occurred_at) AS last_seen,
           count(DISTINCT account_id) AS affected_accounts, max(issue_id) AS newest_issue
      FROM jobsys_failures f
     WHERE {where}
     GROUP BY {column}
     ORDER BY count(*) DESC, {column} NULLS LAST
     LIMIT %(limit)s
  ) g
  LEFT JOIN jobsys_issues i ON i.id = g.newest_issue
 ORDER BY g.occurrences DESC, g.key NULLS LAST
"""
WITH_ISSUE = ("fingerprint", "issue")

# Counts per group over the newest %(window)s matching failures only (the web console's
# bounded view: its cost does not grow with the table). Each row also carries the
# window's totals: how many groups and failures it holds and its oldest failure. The
# window is ordered by time alone (no id tie-break), so each filter's
# (column, occurred_at DESC) index gives it in order.
GROUP_FAILURES_WINDOW = """
SELECT key, count(*) AS occurrences, max(occurred_at) AS last_seen,
       count(DISTINCT account_id) AS affected_accounts{newest_issue},
       count(*) OVER () AS window_groups, sum(count(*)) OVER () AS window_failures,
       min(min(occurred_at)) OVER () AS window_oldest
  FROM (SELECT {column} AS key, occurred_at, account_id, issue_id FROM jobsys_failures f
         WHERE {where}
         ORDER BY occurred_at DESC
         LIMIT %(window)s) f
 GROUP BY key
 ORDER BY count(*) DESC, key NULLS LAST
 LIMIT %(limit)s
"""
# The same by fingerprint or issue, naming the group's issue as GROUP_FAILURES_WITH_ISSUE.
GROUP_FAILURES_WINDOW_WITH_ISSUE = """
SELECT g.key, g.occurrences, g.last_seen, g.affected_accounts,
       i.id AS issue_id, i.title AS issue_title,
       g.window_groups, g.window_failures, g.window_oldest
  FROM ({windowed}) g
  LEFT JOIN jobsys_issues i ON i.id = g.newest_issue
 ORDER BY g.occurrences DESC, g.key NULLS LAST
"""

# One failure, with the title and status of its issue (``failures show``).
GET_FAILURE = f"""
SELECT f.*, i.title AS issue_title, i.status AS issue_status
  FROM (SELECT {SHOW_COLUMNS} FROM jobsys_failures WHERE id = %(id)s) f
  LEFT JOIN jobsys_issues i ON i.id = f.issue_id
"""
FAILURE_POSITION = "SELECT occurred_at FROM jobsys_failures WHERE id = %(id)s"

RECENT_FOR_ISSUE = f"""
SELECT {LIST_COLUMNS} FROM jobsys_failures
 WHERE issue_id = %(issue_id)s
 ORDER BY occurred_at DESC, id DESC
 LIMIT %(limit)s
"""

# Rows written without a fingerprint (the reaper's worker_lost rows), oldest first;
# SKIP LOCKED lets every worker process group a share without waiting.
PENDING_GROUPING = f"""
SELECT {SHOW_COLUMNS} FROM jobsys_failures
 WHERE fingerprint IS NULL AND issue_id IS NULL
 ORDER BY id
 LIMIT %(limit)s
 FOR UPDATE SKIP LOCKED
"""


def where_clause(filters: dict[str, Any]) -> str:
    """AND of the fragments of the filters that are set (values stay bound parameters)."""
    parts = [
        FILTER_CLAUSES[name]
        for name, value in filters.items()
        if value is not None and name in FILTER_CLAUSES
    ]
    return " AND ".join(parts) or "TRUE"


async def list_failures(conn: Any, filters: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    sql = list_query(filters)
    return await fetch_all(conn, sql, text_params({**filters, "limit": limit}))


def list_query(filters: dict[str, Any]) -> str:
    """What ``failures list`` runs for ``filters`` (``make bench`` explains it)."""
    where = where_clause(filters)
    return ordered(LIST_COLUMNS, where, filters, LIST_ORDER, keys="f.id, f.occurred_at")


async def count_failures(
    conn: Any, filters: dict[str, Any], cap: int, group_by: str | None = None
) -> int | None:
    """How many failures (or groups) match, None when more than ``cap`` do."""
    where = where_clause(filters)
    if group_by is None:
        sql = COUNT_FAILURES.format(where=where)
    else:
        sql = COUNT_GROUPS.format(where=where, column=GROUP_COLUMNS[group_by])
    row = await fetch_one(conn, sql, {**filters, "cap": cap + 1})
    n = int(row["n"]) if row else 0
    return None if n > cap else n


async def group_failures(
    conn: Any, filters: dict[str, Any], group_by: str, limit: int
) -> list[dict[str, Any]]:
    query = GROUP_FAILURES_WITH_ISSUE if group_by in WITH_ISSUE else GROUP_FAILURES
    sql = query.format(column=GROUP_COLUMNS[group_by], where=where_clause(filters))
    return await fetch_all(conn, sql, {**filters, "limit": limit})


async def group_failures_window(
    conn: Any, filters: dict[str, Any], group_by: str, limit: int, window: int
) -> list[dict[str, Any]]:
    """:func:`group_failures` over the newest ``window`` matching failures; every row
    has ``window_groups``, ``window_failures`` and ``window_oldest``."""
    with_issue = group_by in WITH_ISSUE
    sql = GROUP_FAILURES_WINDOW.format(
        column=GROUP_COLUMNS[group_by],
        where=where_clause(filters),
        newest_issue=", max(issue_id) AS newest_issue" if with_issue else "",
    )
    if with_issue:
        sql = GROUP_FAILURES_WINDOW_WITH_ISSUE.format(windowed=sql)
    return await fetch_all(conn, sql, {**filters, "limit": limit, "window": window})


async def get_failure(conn: Any, failure_id: int) -> dict[str, Any] | None:
    return await fetch_one(conn, GET_FAILURE, {"id": failure_id})


async def failure_position(conn: Any, failure_id: int) -> Any:
    row = await fetch_one(conn, FAILURE_POSITION, {"id": failure_id})
    return row["occurred_at"] if row else None


async def recent_for_issue(conn: Any, issue_id: int, limit: int) -> list[dict[str, Any]]:
    return await fetch_all(conn, RECENT_FOR_ISSUE, {"issue_id": issue_id, "limit": limit})


async def pending_grouping(conn: Any, limit: int) -> list[dict[str, Any]]:
    return await fetch_all(conn, PENDING_GROUPING, {"limit": limit})


async def unrecorded_attempts(
    conn: Any, after_id: int, upto: int, grace_seconds: float, limit: int
) -> list[dict[str, Any]]:
    params = {"after_id": after_id, "upto": upto, "grace": grace_seconds, "limit": limit}
    return await fetch_all(conn, UNRECORDED_ATTEMPTS, params)


async def events_start(conn: Any, lookback_seconds: float) -> int:
    row = await fetch_one(conn, EVENTS_START, {"lookback": lookback_seconds})
    return int(row["after_id"]) if row else 0


async def events_settled(conn: Any, after_id: int, grace_seconds: float) -> int:
    row = await fetch_one(conn, EVENTS_SETTLED, {"after_id": after_id, "grace": grace_seconds})
    return int(row["upto"]) if row else after_id
