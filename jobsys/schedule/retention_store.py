"""SQL of the schedule's retention: old jobs, failures, ticks and fan-out runs, deleted in
batches (``jobsys.schedule.retention``)."""

from __future__ import annotations

from typing import Any

from jobsys.engine.queries import DELETE_FINISHED_JOBS, DELETE_OLD_FAILURES

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
