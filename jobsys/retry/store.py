"""SQL of the retry pipeline: selecting failures, locking them with their jobs,
retrying the jobs, and recording every decision (``retry_state`` + ``jobsys_retry_events``).

Lock order, the same on every path so two retries never deadlock: failure rows
(by id), then pipeline rows (by id), then job rows (by id). The pipeline code takes
pipelines before jobs too.

Jobs are retried through ``jobsys.jobs.enqueue`` (Procrastinate's own retry function,
what ``JobManager.retry_job_by_id_async`` runs) on the caller's connection, so the retry
and its decision rows commit together: that JobManager method takes no ``connection``
in Procrastinate 3.10. Statements that read jobs are in ``jobsys.engine.queries``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from jobsys.db.query import fetch_all
from jobsys.engine.queries import (
    AUTO_CANDIDATES,
    LATEST_FAILURE_OF_JOB,
    LOAD_JOBS,
    RECONCILE_OUTCOMES,
    REPLAY_CANDIDATES,
)
from jobsys.failures import store as failures_store
from jobsys.failures.filters import FailureFilter

#: Each chunk's transaction waits at most this long for a row lock, then gives up.
LOCK_TIMEOUT = "10s"


def filter_where(flt: FailureFilter) -> tuple[str, dict[str, Any]]:
    """A ``WHERE`` condition over ``jobsys_failures f`` and its bound parameters: the
    same fragments ``jobsys failures list`` uses, so both see one set."""
    params = flt.params()
    return failures_store.where_clause(params), params


COUNT_MATCHING = (
    "SELECT count(*) AS n FROM (SELECT 1 FROM jobsys_failures f WHERE {where} LIMIT %(limit)s) m"
)


EXISTING_IDS = "SELECT id FROM jobsys_failures WHERE id = ANY(%(ids)s)"

ISSUE_EXISTS = "SELECT id, kind, status FROM jobsys_issues WHERE id = %(id)s"

SET_LOCK_TIMEOUT = f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"

# The failures with what the rules need from their own row, their pipeline step
# (recorded, else found by job id: capture may not know the step) and their issue.
LOAD_FAILURES = """
SELECT f.id, f.job_id, f.task, f.queue, f.kind, f.retryable, f.retry_state, f.occurred_at,
       COALESCE(f.pipeline_step_id, s.id) AS step_id,
       (i.kind = 'service_outage' AND i.status <> 'resolved') IS TRUE AS outage_open
FROM jobsys_failures f
LEFT JOIN LATERAL (
    SELECT st.id FROM jobsys_pipeline_steps st WHERE st.job_id = f.job_id
    ORDER BY st.id DESC LIMIT 1
) s ON f.pipeline_step_id IS NULL
LEFT JOIN jobsys_issues i ON i.id = f.issue_id
WHERE f.id = ANY(%(ids)s)
ORDER BY f.id
"""
LOCK_SUFFIX_FAILURES = "FOR UPDATE OF f"

LOAD_STEPS = """
SELECT s.id AS step_id, s.status AS step_status, p.id AS pipeline_id, p.status AS pipeline_status
FROM jobsys_pipeline_steps s JOIN jobsys_pipelines p ON p.id = s.pipeline_id
WHERE s.id = ANY(%(ids)s)
ORDER BY p.id
"""
LOCK_SUFFIX_STEPS = "FOR UPDATE OF p"

LOCK_SUFFIX_JOBS = "FOR UPDATE OF j"

# One job's failure rows, as ``rules.refusal_known`` reads them.
JOB_FAILURE_ROWS = """
SELECT id, kind, will_retry FROM jobsys_failures WHERE job_id = %(job_id)s ORDER BY id
"""

# Per job, over all its failure rows: the ones with a pending jobsys retry, the
# automatic retries made so far, when it last failed, its newest failure and its
# newest final one (not retried by Procrastinate itself: the job failed for good).
JOB_AGGREGATES = """
SELECT job_id,
       coalesce(array_agg(id) FILTER (WHERE retry_state->>'outcome' = 'pending'), '{}')
           AS pending_ids,
       coalesce(sum((retry_state->>'auto_attempts')::int), 0)::int AS auto_attempts,
       max(occurred_at) AS last_failed_at,
       max(id) AS latest_id,
       max(id) FILTER (WHERE NOT will_retry) AS latest_final_id,
       (array_agg(kind ORDER BY id DESC))[1] AS latest_kind
FROM jobsys_failures
WHERE job_id = ANY(%(ids)s)
GROUP BY job_id
"""

RECORD_EVENTS = """
INSERT INTO jobsys_retry_events
    (failure_id, job_id, decision, new_job_id, actor, batch_id, created_at)
SELECT e.failure_id, e.job_id, e.decision, e.new_job_id, %(actor)s, %(batch_id)s, %(now)s
FROM jsonb_to_recordset(%(rows)s::jsonb)
     AS e(failure_id bigint, job_id bigint, decision text, new_job_id bigint)
"""

UPDATE_STATES = """
UPDATE jobsys_failures f SET retry_state = s.state
FROM jsonb_to_recordset(%(rows)s::jsonb) AS s(id bigint, state jsonb)
WHERE f.id = s.id
"""


# Outage replay (``jobsys_outage_replays``): service_outage issues resolved and not
# replayed since.
RESOLVED_OUTAGES = """
SELECT i.id, i.resolved_at FROM jobsys_issues i
LEFT JOIN jobsys_outage_replays r ON r.issue_id = i.id
WHERE i.kind = 'service_outage' AND i.status = 'resolved'
  AND (r.replayed_at IS NULL OR r.replayed_at < coalesce(i.resolved_at, i.last_seen))
ORDER BY i.id
"""

#: ``%(cursor)s`` NULL: the replay went through every failure (``replayed_at`` now).
SAVE_REPLAY_PROGRESS = """
INSERT INTO jobsys_outage_replays AS r (issue_id, replayed_at, cursor, retried)
VALUES (
    %(id)s, CASE WHEN %(cursor)s::bigint IS NULL THEN %(now)s::timestamptz END,
    %(cursor)s::bigint, %(retried)s
)
ON CONFLICT (issue_id) DO UPDATE
SET replayed_at = coalesce(excluded.replayed_at, r.replayed_at),
    cursor = excluded.cursor,
    retried = r.retried + excluded.retried
"""

REPLAY_CURSOR = """
SELECT coalesce(cursor, 0) AS cursor FROM jobsys_outage_replays WHERE issue_id = %(id)s
"""


async def count_matching(conn: Any, flt: FailureFilter, limit: int) -> int:
    where, params = filter_where(flt)
    rows = await fetch_all(conn, COUNT_MATCHING.format(where=where), {**params, "limit": limit})
    return int(rows[0]["n"])


async def next_ids(conn: Any, flt: FailureFilter, *, after: int, limit: int) -> list[int]:
    where, params = filter_where(flt)
    sql = failures_store.ordered("f.id", f"{where} AND f.id > %(after)s", params, "id", "f.id")
    rows = await fetch_all(
        conn, sql, failures_store.text_params({**params, "after": after, "limit": limit})
    )
    return [int(r["id"]) for r in rows]


async def latest_failure_of_job(conn: Any, job_id: int) -> tuple[int | None, bool]:
    """The job's most recent failure id (None if it has none), and whether the job exists."""
    (row,) = await fetch_all(conn, LATEST_FAILURE_OF_JOB, {"job_id": job_id})
    return row["failure_id"], bool(row["job_exists"])


async def existing_ids(conn: Any, ids: Sequence[int]) -> set[int]:
    return {int(r["id"]) for r in await fetch_all(conn, EXISTING_IDS, {"ids": list(ids)})}


async def issue(conn: Any, issue_id: int) -> dict[str, Any] | None:
    rows = await fetch_all(conn, ISSUE_EXISTS, {"id": issue_id})
    return rows[0] if rows else None


async def set_lock_timeout(conn: Any) -> None:
    await conn.execute(SET_LOCK_TIMEOUT)


async def load_failures(conn: Any, ids: Sequence[int], *, lock: bool) -> list[dict[str, Any]]:
    query = LOAD_FAILURES + (LOCK_SUFFIX_FAILURES if lock else "")
    return await fetch_all(conn, query, {"ids": list(ids)})


async def load_steps(
    conn: Any, step_ids: Iterable[int], *, lock: bool
) -> dict[int, dict[str, Any]]:
    ids = sorted(set(step_ids))
    if not ids:
        return {}
    query = LOAD_STEPS + (LOCK_SUFFIX_STEPS if lock else "")
    return {int(r["step_id"]): r for r in await fetch_all(conn, query, {"ids": ids})}


async def load_jobs(conn: Any, job_ids: Iterable[int], *, lock: bool) -> dict[int, dict[str, Any]]:
    query = LOAD_JOBS + (LOCK_SUFFIX_JOBS if lock else "")
    return {int(r["id"]): r for r in await fetch_all(conn, query, {"ids": sorted(set(job_ids))})}


async def job_failure_rows(conn: Any, job_id: int) -> list[dict[str, Any]]:
    return await fetch_all(conn, JOB_FAILURE_ROWS, {"job_id": job_id})


async def job_aggregates(conn: Any, job_ids: Iterable[int]) -> dict[int, dict[str, Any]]:
    rows = await fetch_all(conn, JOB_AGGREGATES, {"ids": sorted(set(job_ids))})
    return {int(r["job_id"]): r for r in rows}


async def record(
    conn: Any,
    *,
    events: list[dict[str, Any]],
    states: list[dict[str, Any]],
    actor: str,
    batch_id: str,
    now: datetime,
) -> None:
    """One audit row per decision, and the failures' new retry_state."""
    if events:
        await conn.execute(
            RECORD_EVENTS,
            {"rows": json.dumps(events), "actor": actor, "batch_id": batch_id, "now": now},
        )
    if states:
        await conn.execute(UPDATE_STATES, {"rows": json.dumps(states, default=str)})


async def reconcile_outcomes(conn: Any, *, now: datetime, limit: int) -> int:
    """Record the outcome of pending retries whose job finished; the number updated."""
    return len(await fetch_all(conn, RECONCILE_OUTCOMES, {"now": now, "limit": limit}))


async def auto_candidates(
    conn: Any, *, now: datetime, recheck_before: datetime, limit: int
) -> list[int]:
    params = {"now": now, "recheck_before": recheck_before, "limit": limit}
    rows = await fetch_all(conn, AUTO_CANDIDATES, params)
    return [int(r["id"]) for r in rows]


async def resolved_outages(conn: Any) -> list[int]:
    return [int(r["id"]) for r in await fetch_all(conn, RESOLVED_OUTAGES, {})]


async def replay_cursor(conn: Any, issue_id: int) -> int:
    rows = await fetch_all(conn, REPLAY_CURSOR, {"id": issue_id})
    return int(rows[0]["cursor"]) if rows else 0


async def replay_candidates(conn: Any, issue_id: int, *, after: int, limit: int) -> list[int]:
    rows = await fetch_all(
        conn, REPLAY_CANDIDATES, {"issue_id": issue_id, "after": after, "limit": limit}
    )
    return [int(r["id"]) for r in rows]


async def save_replay_progress(
    conn: Any, issue_id: int, *, cursor: int | None, retried: int, now: datetime
) -> None:
    """Where an unfinished replay stopped (``cursor``), or that it finished (None)."""
    await conn.execute(
        SAVE_REPLAY_PROGRESS, {"id": issue_id, "cursor": cursor, "retried": retried, "now": now}
    )
