"""SQL of the lanes domain: worker process rows and heartbeats, the queue overview.

Procrastinate's own operations (finish, retry, register workers) go through its
JobManager; these are the queries it has no operation for, among them claiming
several jobs in one round trip.
"""

from __future__ import annotations

from typing import Any

from jobsys.flow.store import ACTIVE as PAUSE_ACTIVE
from jobsys.flow.store import NOT_PAUSED

# Procrastinate's ``procrastinate_fetch_job_v2`` (schema pinned in
# jobsys.db.procrastinate_schema) with ``LIMIT %(limit)s`` instead of ``LIMIT 1``: the
# same candidate rule, order and row locks, several jobs per round trip. The lock rule
# holds inside one batch too: of two waiting jobs sharing a lock, the later one sees the
# earlier as a waiting job ahead of it and is not a candidate. RETURNING has no order;
# the caller sorts. jobsys adds one rule: no job of a paused queue (flow.store.ACTIVE).
#
# Written for a cost that does not grow with the backlog (``make bench`` claim: one
# claim of 10 took 2.6 / 37 / 840 ms at 3,000 / 20,000 / 100,000 waiting with
# Procrastinate's text, under 1 ms at each with this one), whatever the table's
# statistics say (a queue table's are stale more often than not):
#
# - Each of the lane's queues is walked on its own, in (priority, id) order, through
#   ``ix_jobsys_jobs_waiting_by_queue``, and the first ``limit`` of each are merged: a
#   lane never steps over another lane's backlog. The index's key is an expression
#   (the queue of a waiting job) that only this query names, so the planner cannot
#   prefer an index that reads every waiting job and sorts them, as it did with stale
#   statistics.
# - The lock rule is ``lock IS NULL OR NOT EXISTS``: Procrastinate's ``NOT EXISTS
#   (... WHERE jobs.lock IS NOT NULL AND ...)`` became an anti join that walked every
#   waiting row once per candidate, lock or none. A job with a lock finds the others
#   of its lock through ``ix_jobsys_jobs_active_lock`` (again an expression only this
#   query names).
# - A paused queue is left out before its jobs are read (one probe per queue).
#
# Indexes in migration 0012. Rows locked by a queue's walk but not kept by the merge
# are released when the statement ends (autocommit).
#: What a claim returns: the row Procrastinate's ``Job.from_row`` reads (its own
#: ``fetch_job`` query selects the same columns).
JOB_COLUMNS = """id, status, task_name, priority, lock, queueing_lock, args, scheduled_at,
       queue_name, attempts, worker_id"""

#: Procrastinate's order: priority, then id, across the lane's queues.
BY_PRIORITY = "per_queue.priority DESC, per_queue.id ASC"
#: ``order: strict`` / ``weights``: the queues in the order given, then as above.
BY_QUEUE_ORDER = "lane_queue.position, " + BY_PRIORITY


def _claim_jobs(order_by: str) -> str:
    return f"""
WITH candidate AS (
    SELECT per_queue.id AS candidate_id
      FROM unnest(%(queues)s::varchar[]) WITH ORDINALITY AS lane_queue(name, position)
     CROSS JOIN LATERAL (
        SELECT jobs.id, jobs.priority
          FROM procrastinate_jobs AS jobs
         WHERE (CASE WHEN jobs.status = 'todo' THEN jobs.queue_name END) = lane_queue.name
           AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
           AND (
               jobs.lock IS NULL
               OR NOT EXISTS (
                   SELECT 1
                     FROM procrastinate_jobs AS other_jobs
                    WHERE other_jobs.lock IS NOT NULL
                      AND (CASE WHEN other_jobs.status IN ('todo', 'doing')
                                THEN other_jobs.lock END) = jobs.lock
                      AND (
                          other_jobs.status = 'doing'
                          OR other_jobs.priority > jobs.priority
                          OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id)
                      )
               )
           )
         ORDER BY jobs.priority DESC, jobs.id ASC
         LIMIT %(limit)s
           FOR UPDATE OF jobs SKIP LOCKED
     ) AS per_queue
     WHERE NOT EXISTS (
               SELECT 1 FROM jobsys_queue_pauses AS pause
                WHERE pause.queue = lane_queue.name AND {PAUSE_ACTIVE}
           )
     ORDER BY {order_by}
     LIMIT %(limit)s
)
UPDATE procrastinate_jobs
   SET status = 'doing', worker_id = %(worker_id)s
  FROM candidate
 WHERE procrastinate_jobs.id = candidate.candidate_id
RETURNING {JOB_COLUMNS}
"""


CLAIM_JOBS = _claim_jobs(BY_PRIORITY)
#: The claim of a lane with ``order: strict`` or ``weights``: the first queue's due jobs
#: first (priority orders jobs within a queue). Each queue is walked on its own either
#: way, so it costs what CLAIM_JOBS costs.
CLAIM_JOBS_IN_ORDER = _claim_jobs(BY_QUEUE_ORDER)

# Jobs this worker claimed but is not running: a claim whose reply was lost (the
# connection dropped after the server committed it). Nobody else runs them while this
# worker's heartbeat lives, so the worker itself must take them up.
UNSTARTED_JOBS = f"""
SELECT {JOB_COLUMNS}
  FROM procrastinate_jobs
 WHERE status = 'doing' AND worker_id = %(worker_id)s
   AND NOT (id = ANY(%(running)s::bigint[]))
 ORDER BY priority DESC, id ASC
 LIMIT %(limit)s
"""

REGISTER_PROCESS = """
INSERT INTO jobsys_worker_processes (
    id, hostname, pid, lanes, concurrency, status, started_at, last_heartbeat
)
VALUES (
    %(id)s, %(hostname)s, %(pid)s, %(lanes)s, %(concurrency)s::jsonb, 'running', %(started_at)s,
    now()
)
"""

SET_PROCRASTINATE_WORKERS = """
UPDATE jobsys_worker_processes SET procrastinate_worker_ids = %(worker_ids)s WHERE id = %(id)s
"""

# One round trip keeps the process row and every lane's procrastinate_workers row
# alive together, so the reaper never sees a live process with a stale lane. A running
# process whose lane rows are gone (a reaper took it for dead) is fenced: the heartbeat
# reports it and the process exits; the row says ``fenced`` from this same statement,
# since the process writes nothing more (``jobsys workers``).
HEARTBEAT = """
WITH process AS (
    UPDATE jobsys_worker_processes
       SET last_heartbeat = now(),
           status = CASE
               WHEN %(status)s = 'running'
                AND (SELECT count(*) FROM procrastinate_workers
                      WHERE id = ANY(%(worker_ids)s::bigint[]))
                    < cardinality(%(worker_ids)s::bigint[])
               THEN 'fenced'
               ELSE %(status)s
           END
     WHERE id = %(id)s
 RETURNING id
), workers AS (
    UPDATE procrastinate_workers
       SET last_heartbeat = now()
     WHERE id = ANY(%(worker_ids)s::bigint[])
 RETURNING id
)
SELECT (SELECT count(*) FROM process) AS processes, (SELECT count(*) FROM workers) AS workers
"""

MARK_STOPPED = """
UPDATE jobsys_worker_processes
   SET status = 'stopped', stopped_at = now(), last_heartbeat = now()
 WHERE id = %(id)s
"""

# Drain: nothing due in the selected queues, nothing running on this process's lanes.
# Jobs of a paused queue do not count: the drain would wait for them forever.
DRAIN_STATE = f"""
SELECT count(*) FILTER (
           WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
             AND {NOT_PAUSED}
       ) AS waiting,
       count(*) FILTER (WHERE status = 'doing' AND worker_id = ANY(%(worker_ids)s::bigint[]))
           AS running
  FROM procrastinate_jobs AS jobs
 WHERE queue_name = ANY(%(queues)s::text[]) AND status IN ('todo', 'doing')
"""

WAITING_BY_QUEUE = """
SELECT queue_name AS queue, count(*) AS waiting
  FROM procrastinate_jobs
 WHERE queue_name = ANY(%(queues)s::text[])
   AND status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
 GROUP BY queue_name
"""

# The queue overview in one statement. The oldest wait: a job waits since its
# scheduled_at (schedule_in/at, retries) or, when it has none, since its 'deferred'
# event; among unscheduled jobs the lowest id is the oldest, so one event lookup per
# queue suffices (procrastinate_events is indexed by job_id).
QUEUE_OVERVIEW = """
WITH configured AS (
    SELECT q.queue, q.ord FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS q(queue, ord)
), live AS (
    SELECT queue_name,
           count(*) FILTER (
               WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
           ) AS waiting,
           count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now()) AS scheduled,
           count(*) FILTER (WHERE status = 'doing') AS running,
           min(scheduled_at) FILTER (
               WHERE status = 'todo' AND scheduled_at <= now()
           ) AS oldest_scheduled_at,
           min(id) FILTER (WHERE status = 'todo' AND scheduled_at IS NULL) AS oldest_unscheduled_id
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing') AND queue_name = ANY(%(queues)s::text[])
     GROUP BY queue_name
)
SELECT c.queue,
       coalesce(l.waiting, 0) AS waiting,
       coalesce(l.scheduled, 0) AS scheduled,
       coalesce(l.running, 0) AS running,
       (SELECT count(*) FROM jobsys_failures f
         WHERE f.queue = c.queue AND f.occurred_at > now() - interval '1 hour') AS failed_last_hour,
       extract(epoch FROM now() - least(
           l.oldest_scheduled_at,
           (SELECT min(e.at) FROM procrastinate_events e
             WHERE e.job_id = l.oldest_unscheduled_id AND e.type = 'deferred')
       ))::float8 AS oldest_wait_seconds
  FROM configured c
  LEFT JOIN live l ON l.queue_name = c.queue
 ORDER BY c.ord
"""


async def _rows(conn: Any, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    # Works on pool connections (tuple rows) and jobsys.db.connect ones (dict rows) alike.
    from psycopg.rows import tuple_row

    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return list(await cur.fetchall()) if cur.description else []


async def register_process(conn: Any, params: dict[str, Any]) -> None:
    await _rows(conn, REGISTER_PROCESS, params)


async def set_procrastinate_workers(conn: Any, process_id: str, worker_ids: list[int]) -> None:
    await _rows(conn, SET_PROCRASTINATE_WORKERS, {"id": process_id, "worker_ids": worker_ids})


async def heartbeat(
    conn: Any, process_id: str, worker_ids: list[int], status: str
) -> tuple[int, int]:
    """Beat once; returns (process rows, Procrastinate worker rows) updated."""
    rows = await _rows(
        conn, HEARTBEAT, {"id": process_id, "worker_ids": worker_ids, "status": status}
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


async def mark_stopped(conn: Any, process_id: str) -> None:
    await _rows(conn, MARK_STOPPED, {"id": process_id})


async def drain_state(conn: Any, queues: list[str], worker_ids: list[int]) -> tuple[int, int]:
    """(due jobs waiting in ``queues``, jobs running on ``worker_ids``)."""
    rows = await _rows(conn, DRAIN_STATE, {"queues": queues, "worker_ids": worker_ids})
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


async def waiting_by_queue(conn: Any, queues: list[str]) -> dict[str, int]:
    rows = await _rows(conn, WAITING_BY_QUEUE, {"queues": queues})
    return {str(r[0]): int(r[1]) for r in rows}


async def queue_overview(conn: Any, queues: list[str]) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(QUEUE_OVERVIEW, {"queues": queues})
        return list(await cur.fetchall())


async def claim_jobs(
    connector: Any, queues: list[str], worker_id: int, limit: int, *, in_order: bool = False
) -> list[dict[str, Any]]:
    """Mark up to ``limit`` due jobs of ``queues`` as ``doing`` for ``worker_id``, in
    Procrastinate's fetch order (priority, then id), or with ``in_order`` queue by queue
    in the order of ``queues``; their rows, in that order."""
    rows = await connector.execute_query_all_async(
        CLAIM_JOBS_IN_ORDER if in_order else CLAIM_JOBS,
        queues=queues,
        worker_id=worker_id,
        limit=limit,
    )
    rank = {q: i for i, q in enumerate(queues)} if in_order else {}
    return sorted(rows, key=lambda r: (rank.get(r["queue_name"], 0), -r["priority"], r["id"]))


async def unstarted_jobs(
    connector: Any, worker_id: int, running: list[int], limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` jobs in ``doing`` for ``worker_id`` that are not in ``running``."""
    return list(
        await connector.execute_query_all_async(
            UNSTARTED_JOBS, worker_id=worker_id, running=running, limit=limit
        )
    )


#: A retry of ``job_id`` collided with the job already waiting under the same queueing
#: lock: that sibling will do the work. The job's latest failure row (written before
#: the outcome) stops promising a retry and says why. Returns the sibling's id.
MERGE_RETRY_INTO_SIBLING = """
WITH sibling AS (
    SELECT s.id, s.queueing_lock
      FROM procrastinate_jobs j
      JOIN procrastinate_jobs s
        ON s.queueing_lock = j.queueing_lock AND s.status = 'todo' AND s.id <> j.id
     WHERE j.id = %(job_id)s
     LIMIT 1
), noted AS (
    UPDATE jobsys_failures f
       SET will_retry = false,
           retry_state = f.retry_state || jsonb_build_object(
               'outcome', 'merged_into_waiting_sibling',
               'sibling_job_id', (SELECT id FROM sibling),
               'queueing_lock', (SELECT queueing_lock FROM sibling))
     WHERE f.id = (SELECT max(id) FROM jobsys_failures WHERE job_id = %(job_id)s)
       AND EXISTS (SELECT 1 FROM sibling)
)
SELECT id FROM sibling
"""

#: A ``doing`` job without a worker is one the reaper's dead-worker rules settle.
HAND_TO_REAPER = """
UPDATE procrastinate_jobs SET worker_id = NULL WHERE id = %(job_id)s AND status = 'doing'
"""


async def merge_retry_into_sibling(connector: Any, job_id: int) -> int | None:
    rows = await connector.execute_query_all_async(MERGE_RETRY_INTO_SIBLING, job_id=job_id)
    return int(rows[0]["id"]) if rows else None


async def hand_to_reaper(connector: Any, job_id: int) -> None:
    await connector.execute_query_async(HAND_TO_REAPER, job_id=job_id)


# --- jobsys workers ------------------------------------------------------------------

#: Worker processes for ``jobsys workers``: the live ones and those that ended (dead,
#: fenced, stopped) since ``%(ended_since)s``; with ``%(every)s``, every row.
PROCESS_COLUMNS = """
       id, hostname AS host, pid, lanes, concurrency, status, started_at, last_heartbeat,
       stopped_at, procrastinate_worker_ids,
       extract(epoch FROM now() - last_heartbeat)::float8 AS heartbeat_age_seconds
"""

WORKER_PROCESSES = f"""
SELECT {PROCESS_COLUMNS}
  FROM jobsys_worker_processes
 WHERE %(every)s
    OR status IN ('running', 'draining')
    OR last_heartbeat >= now() - make_interval(secs => %(ended_within)s)
 ORDER BY hostname, started_at, id
"""

#: Processes whose id is ``%(ref)s`` or starts with it (``host:pid`` finds a process).
WORKER_PROCESSES_BY_REF = f"""
SELECT {PROCESS_COLUMNS}
  FROM jobsys_worker_processes
 WHERE id = %(ref)s OR starts_with(id, %(ref)s || ':')
 ORDER BY started_at DESC, id
 LIMIT 20
"""

#: The jobs running on these processes' lanes, with how long since their latest start.
RUNNING_ON_PROCESSES = """
SELECT p.id AS process_id, j.id, j.task_name AS task, j.queue_name AS queue,
       j.abort_requested,
       extract(epoch FROM now() - s.started_at)::float8 AS running_seconds
  FROM jobsys_worker_processes p
  JOIN procrastinate_jobs j
    ON j.worker_id = ANY(p.procrastinate_worker_ids) AND j.status = 'doing'
  LEFT JOIN LATERAL (
       SELECT max(e.at) AS started_at FROM procrastinate_events e
        WHERE e.job_id = j.id AND e.type = 'started'
  ) s ON true
 WHERE p.id = ANY(%(ids)s::text[])
 ORDER BY p.id, j.id
"""

#: Failed attempts a process ran, newest first (its host and pid on the failure row).
FAILURES_OF_PROCESS = """
SELECT id, job_id, task, kind, error_class, message, occurred_at
  FROM jobsys_failures
 WHERE host = %(host)s AND pid = %(pid)s AND occurred_at >= %(started_at)s
 ORDER BY occurred_at DESC, id DESC
 LIMIT %(limit)s
"""


async def worker_processes(conn: Any, *, every: bool, ended_within_seconds: float) -> list[Any]:
    from jobsys.db.query import fetch_all

    params = {"every": every, "ended_within": ended_within_seconds}
    return await fetch_all(conn, WORKER_PROCESSES, params)


async def worker_processes_by_ref(conn: Any, ref: str) -> list[dict[str, Any]]:
    from jobsys.db.query import fetch_all

    return await fetch_all(conn, WORKER_PROCESSES_BY_REF, {"ref": ref})


async def running_on_processes(conn: Any, process_ids: list[str]) -> list[dict[str, Any]]:
    from jobsys.db.query import fetch_all

    return await fetch_all(conn, RUNNING_ON_PROCESSES, {"ids": process_ids})


async def failures_of_process(conn: Any, process: dict[str, Any], limit: int) -> list[Any]:
    from jobsys.db.query import fetch_all

    params = {
        "host": process["host"],
        "pid": process["pid"],
        "started_at": process["started_at"],
        "limit": limit,
    }
    return await fetch_all(conn, FAILURES_OF_PROCESS, params)
