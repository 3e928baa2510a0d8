"""SQL of the reaper: the one place it reads and changes jobs and workers.

Every time comparison uses the DATABASE clock (``now()``, or an explicit
``%(now)s`` given by tests), never the host's: hosts disagree, the database is one.
Jobs change state through Procrastinate's own SQL functions (``retry_job``,
``finish_job``, ``cancel_job`` from ``procrastinate.sql.queries``) so its triggers,
events and invariants stay intact; only the claim, the detach from the dead worker and
the NOTIFY are ours.
"""

from __future__ import annotations

from typing import Any

from jobsys.db.query import execute
from jobsys.engine import channels
from jobsys.engine.manager import procrastinate_query

#: The database's idea of "now": an explicit time (tests) or the transaction's clock.
_NOW = "coalesce(%(now)s::timestamptz, now())"

#: Jobs in ``doing`` whose worker is dead (stale heartbeat) or gone (row pruned:
#: Procrastinate's prune sets ``worker_id`` NULL).
_DEAD_WORKER_JOBS_WHERE = f"""
  FROM procrastinate_jobs j
  LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
 WHERE j.status = 'doing'
   AND (w.id IS NULL
        OR w.last_heartbeat < {_NOW} - make_interval(secs => %(dead_after)s))
"""

#: A plain read of the candidates; each is then claimed by id.
LIST_DEAD_WORKER_JOBS = f"""
SELECT j.id {_DEAD_WORKER_JOBS_WHERE} ORDER BY j.id LIMIT %(limit)s
"""

#: The same conditions, re-checked under the job's row lock: a row another reaper (or
#: the worker finishing it) holds is skipped, and one already settled no longer
#: matches, so each job is handled exactly once.
CLAIM_DEAD_WORKER_JOB = f"""
SELECT j.id, j.queue_name, j.task_name, j.args, j.attempts, j.worker_id,
       j.abort_requested,
       w.id IS NOT NULL AS worker_row_exists,
       extract(epoch FROM {_NOW} - w.last_heartbeat)::float8 AS heartbeat_age_seconds,
       extract(epoch FROM {_NOW} - (SELECT max(e.at) FROM procrastinate_events e
                                      WHERE e.job_id = j.id AND e.type = 'started')
              )::float8 AS running_seconds,
       (SELECT count(*) FROM jobsys_failures f
         WHERE f.job_id = j.id AND f.reason = 'worker_lost') AS lost_count,
       (SELECT p.hostname FROM jobsys_worker_processes p
         WHERE j.worker_id = ANY(p.lane_worker_ids) LIMIT 1) AS process_host,
       (SELECT p.pid FROM jobsys_worker_processes p
         WHERE j.worker_id = ANY(p.lane_worker_ids) LIMIT 1) AS process_pid,
       (SELECT p.id FROM jobsys_worker_processes p
         WHERE j.worker_id = ANY(p.lane_worker_ids) LIMIT 1) AS process_id
{_DEAD_WORKER_JOBS_WHERE}
   AND j.id = %(job_id)s
   FOR UPDATE OF j SKIP LOCKED
"""

#: A requeued job must not point at its dead worker any more. Pruning that worker row
#: (this pass does it right after the requeue, and every worker's reaper may) sets
#: ``worker_id`` NULL through the foreign key (``ON DELETE SET NULL``), which row-locks
#: the job until the prune commits; a worker woken by our NOTIFY claims with
#: ``FOR UPDATE SKIP LOCKED``, skips the locked job, finds nothing and sleeps until its
#: next poll (up to ``poll_interval_seconds``). Run while the job is still ``doing``,
#: so none of Procrastinate's triggers on ``todo`` rows fires for it.
DETACH_FROM_WORKER = """
UPDATE procrastinate_jobs SET worker_id = NULL WHERE id = %(job_id)s
"""

#: The same wake-up Procrastinate's insert trigger sends; its retry path sends none,
#: so without this a requeued job would wait for the next poll.
NOTIFY_JOB_READY = """
SELECT pg_notify(%(queue_channel)s, %(payload)s), pg_notify(%(any_channel)s, %(payload)s)
"""

#: Jobs running under a LIVE worker, with how long they have run (from their latest
#: ``started`` event). Those already asked to abort are reported apart, not re-asked.
RUNNING_UNDER_LIVE_WORKERS = f"""
SELECT j.id, j.queue_name, j.task_name, j.worker_id, j.abort_requested,
       extract(epoch FROM {_NOW} - s.started_at)::float8 AS running_seconds
  FROM procrastinate_jobs j
  JOIN procrastinate_workers w ON w.id = j.worker_id
  CROSS JOIN LATERAL (
       SELECT max(e.at) AS started_at FROM procrastinate_events e
        WHERE e.job_id = j.id AND e.type = 'started'
  ) s
 WHERE j.status = 'doing'
   AND w.last_heartbeat >= {_NOW} - make_interval(secs => %(dead_after)s)
   AND s.started_at < {_NOW} - make_interval(secs => %(min_running)s)
 ORDER BY j.id
"""

MARK_DEAD_PROCESSES = f"""
UPDATE jobsys_worker_processes
   SET status = 'dead', stopped_at = coalesce(stopped_at, {_NOW})
 WHERE status IN ('running', 'draining')
   AND last_heartbeat < {_NOW} - make_interval(secs => %(dead_after)s)
RETURNING id
"""

#: Procrastinate's worker rows with a stale heartbeat (its own prune, on our clock).
#: Dead worker rows whose jobs are all settled. A row that still has a ``doing`` job
#: waits for a pass that settles it: pruning it first set the job's ``worker_id`` NULL
#: (the foreign key's ``ON DELETE SET NULL``), and the job's ``worker_lost`` failure
#: then could not say which process ran it (a worker that crossed ``dead_after`` between
#: the settle step and the prune step of one pass, or a job the settle step skipped).
PRUNE_DEAD_WORKERS = f"""
DELETE FROM procrastinate_workers w
 WHERE w.last_heartbeat < {_NOW} - make_interval(secs => %(dead_after)s)
   AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j
                    WHERE j.worker_id = w.id AND j.status = 'doing')
RETURNING w.id
"""


async def finish_job(conn: Any, job_id: int, status: str) -> None:
    """Procrastinate's ``finish_job``: ``doing`` to ``failed``/``aborted``/``succeeded``."""
    await execute(
        conn,
        procrastinate_query("finish_job"),
        {"job_id": job_id, "status": status, "delete_job": False},
    )


async def requeue_job(conn: Any, job_id: int, queue: str) -> None:
    """Detach the job from its dead worker, Procrastinate's ``retry_job`` (``todo``,
    attempts + 1), then wake a worker; the caller's transaction makes them one."""
    await execute(conn, DETACH_FROM_WORKER, {"job_id": job_id})
    await execute(
        conn,
        procrastinate_query("retry_job"),
        {
            "job_id": job_id,
            # NULL: runnable at once by the database's clock, whatever the host's says.
            "retry_at": None,
            "new_priority": None,
            "new_queue_name": None,
            "new_lock": None,
        },
    )
    await execute(
        conn,
        NOTIFY_JOB_READY,
        {
            "queue_channel": channels.queue_channel(queue),
            "any_channel": channels.ANY_QUEUE_CHANNEL,
            "payload": channels.job_ready_payload(job_id),
        },
    )


async def request_abort(conn: Any, job_id: int) -> None:
    """Procrastinate's abort request (its trigger NOTIFYs the worker running the job)."""
    await execute(
        conn,
        procrastinate_query("cancel_job"),
        {"job_id": job_id, "abort": True, "delete_job": False},
    )
