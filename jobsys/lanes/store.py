"""SQL of the lanes domain: worker process rows and heartbeats, the queue overview.

Procrastinate's own operations (finish, retry, register workers) go through its
JobManager; these are the queries it has no operation for, among them claiming
several jobs in one round trip.
"""

from __future__ import annotations

from typing import Any

from jobsys.flow.store import NOT_PAUSED

# Procrastinate's ``procrastinate_fetch_job_v2`` (schema pinned in
# jobsys.db.procrastinate_schema) with ``LIMIT %(limit)s`` instead of ``LIMIT 1``: the
# same candidate rule, order and row locks, several jobs per round trip. The lock rule
# holds inside one batch too: of two waiting jobs sharing a lock, the later one sees the
# earlier as a waiting job ahead of it and is not a candidate. RETURNING has no order;
# the caller sorts. jobsys adds one rule: no job of a paused queue (NOT_PAUSED).
#
# Unlike Procrastinate's text, the lock rule is written ``lock IS NULL OR NOT EXISTS``:
# Procrastinate's ``NOT EXISTS (... WHERE jobs.lock IS NOT NULL AND ...)`` is planned
# as an anti join whose inner side walks every waiting row once per candidate, so a
# claim cost grew with the backlog (0.4 ms at 3,000 waiting, 200-840 ms at 100,000;
# ``make bench`` claim). Written this way a job without a lock never looks at other
# rows, and one with a lock looks them up by lock (``ix_jobsys_jobs_active_lock``,
# migration 0012): the claim walks the priority index
# (``procrastinate_jobs_priority_idx_v1``) only as far as the jobs it takes.
#: What a claim returns: the row Procrastinate's ``Job.from_row`` reads (its own
#: ``fetch_job`` query selects the same columns).
JOB_COLUMNS = """id, status, task_name, priority, lock, queueing_lock, args, scheduled_at,
       queue_name, attempts, worker_id"""

#: Procrastinate's order: priority, then id, across the lane's queues.
BY_PRIORITY = "jobs.priority DESC, jobs.id ASC"
#: ``order: strict`` / ``weights``: the queues in the order given, then as above.
BY_QUEUE_ORDER = "array_position(%(queues)s::varchar[], jobs.queue_name), " + BY_PRIORITY


#: Which waiting jobs a lane may claim now (``jobs`` is procrastinate_jobs).
CLAIMABLE = f"""jobs.status = 'todo'
       AND jobs.queue_name = ANY(%(queues)s::varchar[])
       AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
       AND (
           jobs.lock IS NULL
           OR NOT EXISTS (
               SELECT 1
                 FROM procrastinate_jobs AS other_jobs
                WHERE other_jobs.lock IS NOT NULL
                  AND (CASE WHEN other_jobs.status IN ('todo', 'doing') THEN other_jobs.lock END)
                      = jobs.lock
                  AND (
                      other_jobs.status = 'doing'
                      OR other_jobs.priority > jobs.priority
                      OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id)
                  )
           )
       )
       AND {NOT_PAUSED}"""


def _claim_jobs(order_by: str) -> str:
    return f"""
WITH candidate AS (
    SELECT jobs.id AS candidate_id
      FROM procrastinate_jobs AS jobs
     WHERE {CLAIMABLE}
     ORDER BY {order_by}
     LIMIT %(limit)s
       FOR UPDATE OF jobs SKIP LOCKED
)
UPDATE procrastinate_jobs
   SET status = 'doing', worker_id = %(worker_id)s
  FROM candidate
 WHERE procrastinate_jobs.id = candidate.candidate_id
RETURNING {JOB_COLUMNS}
"""


CLAIM_JOBS = _claim_jobs(BY_PRIORITY)
#: The claim of a lane with ``order: strict`` or ``weights``: the first queue's due jobs
#: first (priority orders jobs within a queue). It sorts every due job of the lane, so
#: it costs more than CLAIM_JOBS with a deep backlog; lanes keep the default unless
#: they need the order.
CLAIM_JOBS_IN_ORDER = _claim_jobs(BY_QUEUE_ORDER)

#: The first step of a claim under flow limits (jobsys.flow.limits): due jobs, locked,
#: each with the bucket of the limit it falls under (NULL: none): ``kind:target:key``.
#: A task's limit wins over its queue's. Buckets known to be full are skipped here, so
#: a key at its limit does not hide the other keys' jobs behind it.


def _limited_candidates(order_by: str) -> str:
    return f"""
SELECT jobs.id, limits.kind || ':' || limits.target || ':'
                || coalesce(jobs.args ->> limits.key, '') AS bucket
  FROM procrastinate_jobs AS jobs
  LEFT JOIN LATERAL (
      SELECT t.kind, t.target, t.key
        FROM unnest(%(limit_kinds)s::text[], %(limit_targets)s::text[], %(limit_keys)s::text[])
             AS t(kind, target, key)
       WHERE (t.kind = 'task' AND t.target = jobs.task_name)
          OR (t.kind = 'queue' AND t.target = jobs.queue_name)
       ORDER BY t.kind = 'task' DESC
       LIMIT 1
  ) AS limits ON true
 WHERE {CLAIMABLE}
   AND (limits.kind IS NULL
        OR NOT (limits.kind || ':' || limits.target || ':' || coalesce(jobs.args ->> limits.key, '')
                = ANY(%(full)s::text[])))
 ORDER BY {order_by}
 LIMIT %(scan)s
   FOR UPDATE OF jobs SKIP LOCKED
"""


LIMITED_CANDIDATES_BY_PRIORITY = _limited_candidates(BY_PRIORITY)
LIMITED_CANDIDATES_IN_ORDER = _limited_candidates(BY_QUEUE_ORDER)

#: The last step of a limited claim: the chosen jobs (still locked) become ``doing``.
TAKE_JOBS = f"""
UPDATE procrastinate_jobs
   SET status = 'doing', worker_id = %(worker_id)s
 WHERE id = ANY(%(ids)s::bigint[])
RETURNING {JOB_COLUMNS}
"""

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


async def claim_limited(
    pool: Any,
    queues: list[str],
    worker_id: int,
    limit: int,
    *,
    in_order: bool,
    limits: list[Any],
    full: list[str],
    prune_seconds: float | None = None,
) -> tuple[list[dict[str, Any]], dict[str, float], dict[int, float]]:
    """The claim under flow limits (jobsys.flow.limits), in one transaction: lock due
    jobs (skipping ``full`` buckets), lock their buckets, read them afresh, take what
    fits, record the starts. Returns the rows taken (in claim order) and the buckets
    found full, each with the seconds after which to try it again, and the ids taken
    under a rate with the seconds before which each must not start (their start is
    recorded again when they start: jobsys.flow.watch.start_middleware)."""
    from jobsys.db import query
    from jobsys.flow import limits as flow_limits
    from jobsys.flow import store as flow_store

    params = {
        "queues": queues,
        "scan": max(limit * flow_limits.SCAN_PER_SLOT, flow_limits.SCAN_MIN),
        "limit_kinds": [x.kind for x in limits],
        "limit_targets": [x.target for x in limits],
        "limit_keys": [x.per_key for x in limits],
        "full": full,
    }
    async with pool.connection() as conn, conn.transaction():
        candidates = await query.fetch_all(
            conn,
            LIMITED_CANDIDATES_IN_ORDER if in_order else LIMITED_CANDIDATES_BY_PRIORITY,
            params,
        )
        buckets = sorted({c["bucket"] for c in candidates if c["bucket"]})
        states: dict[str, flow_limits.BucketState] = {}
        if buckets:
            spans = []
            for bucket in buckets:
                found = flow_limits.limit_of(bucket, limits)
                spans.append(found.window_seconds if found else 0.0)
            for row in await flow_store.bucket_states(conn, buckets, spans):
                states[row["bucket"]] = flow_limits.BucketState(
                    int(row["running"]), tuple(row["recent"])
                )
        decision = flow_limits.decide(
            [(c["id"], c["bucket"]) for c in candidates], states, limits, limit
        )
        rows: list[dict[str, Any]] = []
        if decision.ids:
            rows = await query.fetch_all(
                conn, TAKE_JOBS, {"worker_id": worker_id, "ids": decision.ids}
            )
            started = [(b, i) for b, i in zip(decision.buckets, decision.ids, strict=True) if b]
            if started:
                await flow_store.record_starts(
                    conn, [b for b, _ in started], [i for _, i in started]
                )
        if prune_seconds is not None:
            await flow_store.prune_starts(conn, prune_seconds)
    order = {job_id: n for n, job_id in enumerate(decision.ids)}
    rated = {
        job_id: decision.not_before.get(job_id, 0.0)
        for job_id, bucket in zip(decision.ids, decision.buckets, strict=True)
        if bucket and (found := flow_limits.limit_of(bucket, limits)) and found.rate
    }
    return sorted(rows, key=lambda r: order[r["id"]]), decision.full, rated


async def unstarted_jobs(
    connector: Any, worker_id: int, running: list[int], limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` jobs in ``doing`` for ``worker_id`` that are not in ``running``."""
    return list(
        await connector.execute_query_all_async(
            UNSTARTED_JOBS, worker_id=worker_id, running=running, limit=limit
        )
    )


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
