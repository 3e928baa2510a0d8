"""SQL the health checks read: waiting work, failure rates, stalled jobs, live lanes.

Read-only over Procrastinate's tables and ``jobsys_worker_processes``.
"""

from __future__ import annotations

from typing import Any

from jobsys.db.query import fetch_all

# A waiting job is ready since its scheduled time, else since it was (re)queued.
QUEUE_WAITING = """
SELECT j.queue_name AS queue, count(*) AS waiting,
       EXTRACT(EPOCH FROM now() - min(COALESCE(j.scheduled_at, e.at, now()))) AS oldest_wait_seconds
  FROM procrastinate_jobs j
  LEFT JOIN LATERAL (
      SELECT max(at) AS at FROM procrastinate_events
       WHERE job_id = j.id AND type IN ('deferred', 'deferred_for_retry', 'retried')
  ) e ON TRUE
 WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
 GROUP BY j.queue_name
"""

# Attempts that ended in the window, per queue: failed ones (final or to be retried)
# against all finished ones.
QUEUE_OUTCOMES = """
SELECT j.queue_name AS queue,
       count(*) FILTER (WHERE e.type IN ('failed', 'deferred_for_retry')) AS failed,
       count(*) AS finished
  FROM procrastinate_events e
  JOIN procrastinate_jobs j ON j.id = e.job_id
 WHERE e.type IN ('failed', 'deferred_for_retry', 'succeeded')
   AND e.at >= now() - make_interval(secs => %(window)s)
 GROUP BY j.queue_name
"""

# Running jobs whose Procrastinate worker is gone or silent.
QUEUE_STALLED = """
SELECT j.queue_name AS queue, count(*) AS stalled
  FROM procrastinate_jobs j
  LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
 WHERE j.status = 'doing'
   AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %(dead_after)s))
 GROUP BY j.queue_name
"""

LIVE_LANES = """
SELECT DISTINCT unnest(lanes) AS lane FROM jobsys_worker_processes
 WHERE status IN ('running', 'draining')
   AND last_heartbeat >= now() - make_interval(secs => %(dead_after)s)
"""


async def queue_waiting(conn: Any) -> list[dict[str, Any]]:
    return await fetch_all(conn, QUEUE_WAITING)


async def queue_outcomes(conn: Any, window_seconds: float) -> list[dict[str, Any]]:
    return await fetch_all(conn, QUEUE_OUTCOMES, {"window": window_seconds})


async def queue_stalled(conn: Any, dead_after_seconds: float) -> list[dict[str, Any]]:
    return await fetch_all(conn, QUEUE_STALLED, {"dead_after": dead_after_seconds})


async def live_lanes(conn: Any, dead_after_seconds: float) -> set[str]:
    rows = await fetch_all(conn, LIVE_LANES, {"dead_after": dead_after_seconds})
    return {str(r["lane"]) for r in rows}
