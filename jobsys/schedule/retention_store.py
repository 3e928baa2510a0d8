"""SQL of the schedule's retention: old jobs, failures, ticks and fan-out runs, deleted in
batches (``jobsys.schedule.retention``)."""

from __future__ import annotations

from typing import Any

from jobsys.engine.queries import DELETE_FINISHED_JOBS

DELETE_OLD_TICKS = """
WITH doomed AS (
    SELECT t.name, t.tick_at FROM jobsys_schedule_ticks t
     WHERE t.tick_at < %(before)s
       -- keep each entry's latest run, so `schedule list` can still show it
       AND EXISTS (SELECT 1 FROM jobsys_schedule_ticks n
                    WHERE n.name = t.name AND n.tick_at > t.tick_at AND n.status <> 'missed')
     LIMIT %(limit)s
)
DELETE FROM jobsys_schedule_ticks t USING doomed
 WHERE t.name = doomed.name AND t.tick_at = doomed.tick_at
"""

DELETE_OLD_RUNS = """
DELETE FROM jobsys_fanout_runs WHERE id IN (
    SELECT id FROM jobsys_fanout_runs
     WHERE status IN ('finished', 'failed', 'cancelled') AND finished_at < %(before)s
     ORDER BY id LIMIT %(limit)s
)
"""

# Oldest first along ix_jobsys_failures_occurred. A pending retry settles on its failure
# row, a job that still waits or runs keeps its failure history for `jobs show`, and an
# issue not resolved keeps its newest failure: an alert that is still open must show the
# traceback that explains it, however old (a quiet issue muted for months, say).
DELETE_OLD_FAILURES = """
WITH doomed AS (
    SELECT f.id FROM jobsys_failures f
     WHERE f.occurred_at < %(before)s
       AND f.retry_state->>'outcome' IS DISTINCT FROM 'pending'
       AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                        WHERE j.id = f.job_id AND j.status IN ('todo', 'doing'))
       AND NOT EXISTS (SELECT 1 FROM jobsys_issues i
                        WHERE i.id = f.issue_id AND i.status <> 'resolved'
                          AND f.id = (SELECT g.id FROM jobsys_failures g
                                       WHERE g.issue_id = i.id
                                       ORDER BY g.occurred_at DESC, g.id DESC LIMIT 1))
     ORDER BY f.occurred_at
     LIMIT %(limit)s
       FOR UPDATE OF f SKIP LOCKED
)
DELETE FROM jobsys_failures f USING doomed WHERE f.id = doomed.id
"""

PURGE_QUERIES = {
    "jobs": DELETE_FINISHED_JOBS,
    "ticks": DELETE_OLD_TICKS,
    "fanout_runs": DELETE_OLD_RUNS,
    "failures": DELETE_OLD_FAILURES,
}


async def delete_batch(conn: Any, what: str, params: dict[str, Any]) -> int:
    """One batch of one retention query in its own short transaction; rows deleted."""
    async with conn.transaction():
        cur = await conn.execute(PURGE_QUERIES[what], params)
        return int(cur.rowcount or 0)
