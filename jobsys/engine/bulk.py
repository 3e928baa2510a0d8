"""SQL of the bulk actions on jobs (``jobs cancel --all``, ``jobs delete --all``,
``queues purge``): the one place they read and change ``procrastinate_jobs``.

Each chunk is one short transaction: it locks up to ``%(chunk)s`` matching rows in id
order after a cursor (to cancel ``FOR NO KEY UPDATE SKIP LOCKED``, as the claim locks:
a row a worker is claiming is skipped, and a row we hold is skipped by the worker's
claim; to delete ``FOR UPDATE``, waiting for a finished row another transaction holds),
changes them by id with the status re-checked, and updates the audit row. Jobs change state the way
Procrastinate's own ``procrastinate_cancel_job_v1`` changes them (``todo`` to
``cancelled``; ``doing`` gets ``abort_requested``), set-based so its triggers record
the events and NOTIFY the abort; deletes go through its delete trigger (periodic
defers unlinked) and jobsys's (the job's events, migration 0029). Failure rows keep their copy of
what they need (task, queue, args, account) and are not touched.
"""

from __future__ import annotations

from typing import Any

from jobsys.db.query import execute, fetch_all, fetch_one
from jobsys.engine.queries import JOB_FILTER

FINISHED = ("succeeded", "failed", "cancelled", "aborted")

#: Bulk filters beyond ``jobs list``'s: deferred since, and no activity since ``before``
#: (Procrastinate's own ``delete_old_jobs`` rule: the latest event is older; a job
#: without events has no known age and is never taken as old).
_MORE = """
   AND (%(since)s::timestamptz IS NULL
        OR (SELECT min(e.at) FROM procrastinate_events e
             WHERE e.job_id = j.id AND e.type = 'deferred') >= %(since)s::timestamptz)
   AND (%(before)s::timestamptz IS NULL
        OR (SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id)
           < %(before)s::timestamptz)
"""

#: What the filter matches now, per kind (``waiting`` are due, ``scheduled`` later).
COUNT = f"""
SELECT CASE WHEN j.status = 'todo' AND j.scheduled_at > now() THEN 'scheduled'
            WHEN j.status = 'todo' THEN 'waiting'
            WHEN j.status = 'doing' THEN 'running'
            ELSE j.status::text END AS kind,
       count(*) AS n
  FROM procrastinate_jobs j
 WHERE j.status = ANY(%(statuses)s::procrastinate_job_status[])
   AND j.id <= %(upto)s
   AND {JOB_FILTER} {_MORE}
 GROUP BY 1
"""

#: A page of candidates, not locked (dry runs, counts with --arg-contains, samples).
PAGE = f"""
SELECT j.id, j.task_name AS task, j.queue_name AS queue, j.status::text AS status,
       j.scheduled_at, j.args::text AS args_text
  FROM procrastinate_jobs j
 WHERE j.status = ANY(%(statuses)s::procrastinate_job_status[])
   AND j.id > %(after)s AND j.id <= %(upto)s
   AND {JOB_FILTER} {_MORE}
 ORDER BY j.id
 LIMIT %(chunk)s
"""

#: The next chunk to delete, locked for this transaction. Not SKIP LOCKED: it takes
#: finished jobs only, which no claim locks, and a finished row that is locked (the
#: search-index pass's ``FOR KEY SHARE`` batch, a retry) is locked briefly; skipping it
#: moved the cursor past it and left it undeleted, reported as done. The chunk waits
#: for it up to ``LOCK_TIMEOUT`` and is then tried again (``jobsys.jobs.bulk``).
PICK = PAGE + "   FOR UPDATE OF j\n"
#: The next chunk to cancel (a status change, not a delete): ``FOR NO KEY UPDATE``, the
#: claim's lock, so a job whose row is only key-share locked (a foreign-key check,
#: the search-index pass copying it) is cancelled, not passed over.
PICK_TO_CHANGE = PAGE + "   FOR NO KEY UPDATE OF j SKIP LOCKED\n"

LOCK_TIMEOUT = "SET LOCAL lock_timeout = '1s'"

CANCEL = """
UPDATE procrastinate_jobs SET status = 'cancelled'
 WHERE id = ANY(%(ids)s::bigint[]) AND status = 'todo'
"""

ABORT = """
UPDATE procrastinate_jobs SET abort_requested = true
 WHERE id = ANY(%(ids)s::bigint[]) AND status = 'doing' AND NOT abort_requested
"""

DELETE = """
DELETE FROM procrastinate_jobs
 WHERE id = ANY(%(ids)s::bigint[])
   AND status IN ('succeeded', 'failed', 'cancelled', 'aborted')
"""

#: The unique keys of deleted jobs (jobsys.jobs.unique): they would count for nothing.
FORGET_UNIQUE = "DELETE FROM jobsys_unique_jobs WHERE job_id = ANY(%(ids)s::bigint[])"

START_AUDIT = """
INSERT INTO jobsys_bulk_actions (action, actor, filters, matched)
VALUES (%(action)s, %(actor)s, %(filters)s::jsonb, %(matched)s)
RETURNING id
"""

#: The totals so far, written in each chunk's transaction (an interrupted action's
#: row says what it did).
COUNT_AUDIT = """
UPDATE jobsys_bulk_actions SET counts = %(counts)s::jsonb, updated_at = now() WHERE id = %(id)s
"""

FINISH_AUDIT = """
UPDATE jobsys_bulk_actions SET status = 'finished', finished_at = now(), updated_at = now()
 WHERE id = %(id)s
RETURNING counts
"""


async def count(conn: Any, params: dict[str, Any]) -> dict[str, int]:
    return {r["kind"]: int(r["n"]) for r in await fetch_all(conn, COUNT, params)}


async def page(
    conn: Any, params: dict[str, Any], *, lock: bool, deleting: bool = False
) -> list[dict[str, Any]]:
    if not lock:
        return await fetch_all(conn, PAGE, params)
    return await fetch_all(conn, PICK if deleting else PICK_TO_CHANGE, params)


async def change(conn: Any, statement: str, ids: list[int]) -> int:
    return await execute(conn, statement, {"ids": ids}) if ids else 0


async def start_audit(conn: Any, params: dict[str, Any]) -> int:
    row = await fetch_one(conn, START_AUDIT, params)
    assert row is not None
    return int(row["id"])


async def count_audit(conn: Any, audit_id: int, counts: str) -> None:
    await execute(conn, COUNT_AUDIT, {"id": audit_id, "counts": counts})


async def finish_audit(conn: Any, audit_id: int) -> dict[str, Any]:
    row = await fetch_one(conn, FINISH_AUDIT, {"id": audit_id})
    return dict(row["counts"]) if row else {}


MAX_ID = "SELECT coalesce(max(id), 0) AS id FROM procrastinate_jobs"


async def max_id(conn: Any) -> int:
    row = await fetch_one(conn, MAX_ID)
    return int(row["id"]) if row else 0


async def lock_timeout(conn: Any) -> None:
    await execute(conn, LOCK_TIMEOUT)
