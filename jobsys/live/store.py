"""Read-side SQL of live operations: the dashboard snapshot, metrics and the jobs browser.

Every query is named here and takes bound parameters only. They read Procrastinate's
tables directly (JobManager has no bounded, filtered, newest-first listing) and the
jobsys tables of the other domains, never writing. Each is built to stay under a few
milliseconds with millions of jobs: active jobs through ``ix_jobsys_live_jobs_active_queue``,
recent events through ``ix_jobsys_live_events_type_at`` (revision 0005_live_read_indexes).
"""

from __future__ import annotations

from typing import Any

from jobsys.db.query import like_contains

# --- Dashboard --------------------------------------------------------------------

QUEUE_COUNTS = """
SELECT queue_name AS queue,
       count(*) FILTER (WHERE status = 'doing') AS running,
       count(*) FILTER (WHERE status = 'todo'
                          AND (scheduled_at IS NULL OR scheduled_at <= now())) AS waiting,
       count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now()) AS scheduled
  FROM procrastinate_jobs
 WHERE status IN ('todo', 'doing')
 GROUP BY queue_name
"""

# The oldest due job of each queue (lowest id), and since when it has been waiting:
# its last (re)deferral or its scheduled time, whichever is later.
OLDEST_WAIT = """
SELECT q.queue,
       extract(epoch FROM now() - greatest(j.scheduled_at, e.at))::float8 AS oldest_wait_seconds
  FROM unnest(%(queues)s::text[]) AS q(queue)
  JOIN LATERAL (
        SELECT id, scheduled_at
          FROM procrastinate_jobs
         WHERE queue_name = q.queue AND status = 'todo'
           AND (scheduled_at IS NULL OR scheduled_at <= now())
         ORDER BY id
         LIMIT 1) j ON true
  LEFT JOIN LATERAL (
        SELECT max(at) AS at
          FROM procrastinate_events
         WHERE job_id = j.id AND type IN ('deferred', 'deferred_for_retry', 'retried')) e ON true
"""

THROUGHPUT = """
SELECT date_trunc('minute', at) AS minute,
       count(*) FILTER (WHERE type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE type = 'failed') AS failed,
       count(*) FILTER (WHERE type = 'deferred_for_retry') AS retried
  FROM procrastinate_events
 WHERE type IN ('succeeded', 'failed', 'deferred_for_retry')
   AND at >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
 GROUP BY 1
 ORDER BY 1
"""

# The last full sliding minute (the header's rates), not the current calendar minute.
LAST_MINUTE = """
SELECT count(*) FILTER (WHERE type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE type = 'failed') AS failed,
       count(*) FILTER (WHERE type = 'deferred_for_retry') AS retried
  FROM procrastinate_events
 WHERE type IN ('succeeded', 'failed', 'deferred_for_retry')
   AND at >= now() - make_interval(secs => %(seconds)s)
"""

# Failed attempts recorded in the last hour (RECENT FAILURES' total).
FAILURES_SINCE = """
SELECT count(*) AS n FROM jobsys_failures
 WHERE occurred_at >= now() - make_interval(secs => %(seconds)s)
"""

# Pickup latency of the latest starts: from when the job became due to when it started.
PICKUP_LATENCY = """
SELECT count(*) AS samples,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY wait)::float8 AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY wait)::float8 AS p95_seconds,
       max(wait)::float8 AS max_seconds
  FROM (
        SELECT extract(epoch FROM s.at - greatest(
                   d.at, CASE WHEN j.scheduled_at <= s.at THEN j.scheduled_at END)) AS wait
          FROM (SELECT job_id, at
                  FROM procrastinate_events
                 WHERE type = 'started' AND at >= now() - make_interval(secs => %(seconds)s)
                 ORDER BY at DESC
                 LIMIT %(samples)s) s
          JOIN LATERAL (
                SELECT max(at) AS at
                  FROM procrastinate_events e
                 WHERE e.job_id = s.job_id
                   AND e.type IN ('deferred', 'deferred_for_retry', 'retried')
                   AND e.at <= s.at) d ON true
          LEFT JOIN procrastinate_jobs j ON j.id = s.job_id
       ) waits
 WHERE wait IS NOT NULL
"""

RECENT_FAILURES = """
SELECT id, job_id, task, queue, kind, reason, account_id, error_class, message, occurred_at
  FROM jobsys_failures
 ORDER BY occurred_at DESC, id DESC
 LIMIT %(limit)s
"""

# The open issues as `jobsys issues list` shows them (expired mutes are open again),
# what hurts most first: accounts affected, occurrences, then recency.
OPEN_ISSUES = """
SELECT id, kind, title, occurrences, affected_accounts, last_seen, first_seen,
       count(*) OVER () AS total_open
  FROM jobsys_issues
 WHERE status = 'open' OR (status = 'muted' AND muted_until <= now())
 ORDER BY affected_accounts DESC, occurrences DESC, last_seen DESC, id DESC
 LIMIT %(limit)s
"""

SCHEDULE_STATE = """
SELECT name, paused, high_water
  FROM jobsys_schedule_entries
"""

RUNNING_FANOUTS = """
SELECT id, entry, status, task, queue, batch_size, cursor, batches_done, items_enqueued,
       started_at, updated_at
  FROM jobsys_fanout_runs
 WHERE status = 'running'
 ORDER BY started_at DESC
 LIMIT %(limit)s
"""

WORKER_PROCESSES = """
SELECT id, hostname, pid, lanes, status, started_at,
       extract(epoch FROM now() - last_heartbeat)::float8 AS heartbeat_age_seconds
  FROM jobsys_worker_processes
 WHERE status IN ('running', 'draining')
 ORDER BY hostname, pid, id
 LIMIT %(limit)s
"""

PROCRASTINATE_WORKERS = """
SELECT id, extract(epoch FROM now() - last_heartbeat)::float8 AS heartbeat_age_seconds
  FROM procrastinate_workers
 ORDER BY id
 LIMIT %(limit)s
"""

# --- Metrics ----------------------------------------------------------------------

JOBS_BY_QUEUE_STATUS = """
SELECT queue_name AS queue, status::text AS status, count(*) AS jobs
  FROM procrastinate_jobs
 GROUP BY queue_name, status
"""

FAILURES_BY_KIND = """
SELECT kind, count(*) AS failures
  FROM jobsys_failures
 WHERE occurred_at >= now() - make_interval(secs => %(seconds)s)
 GROUP BY kind
"""

OPEN_ISSUES_BY_KIND = """
SELECT kind, count(*) AS issues
  FROM jobsys_issues
 WHERE status = 'open'
 GROUP BY kind
"""

# --- Jobs browser -----------------------------------------------------------------

# The first job deferred at or after a time: a lower bound on the ids to scan for
# ``--since`` (the exact test is on the deferral time below).
FIRST_JOB_SINCE = """
SELECT job_id
  FROM procrastinate_events
 WHERE type = 'deferred' AND at >= %(since)s
 ORDER BY at
 LIMIT 1
"""

#: The filters ``jobs list`` and the bulk actions share, over ``procrastinate_jobs j``
#: (jobsys.live.browser.filter_params binds them; an unset one is NULL).
JOB_FILTER = f"""
       (%(queues)s::text[] IS NULL OR j.queue_name = ANY(%(queues)s::text[]))
   AND (%(task)s::text IS NULL OR j.task_name = %(task)s::text)
   AND (%(account_docs)s::jsonb[] IS NULL OR j.args @> ANY(%(account_docs)s::jsonb[]))
   AND (%(arg_docs)s::jsonb[] IS NULL OR j.args @> ANY(%(arg_docs)s::jsonb[]))
   AND (%(arg_contains)s::text IS NULL
        OR jobsys_args_text(j.args) ILIKE {like_contains("arg_contains")})
"""

LIST_JOBS = f"""
SELECT j.id, j.task_name AS task, j.queue_name AS queue, j.status::text AS status,
       j.attempts, j.priority, j.scheduled_at, d.at AS created_at, j.args,
       j.args::text AS args_text, j.abort_requested, j.worker_id
  FROM procrastinate_jobs j
  LEFT JOIN LATERAL (
        SELECT min(at) AS at
          FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'deferred') d ON true
 WHERE {JOB_FILTER}
   AND (%(statuses)s::text[] IS NULL
        OR j.status = ANY(%(statuses)s::text[]::procrastinate_job_status[]))
   AND (%(min_id)s::bigint IS NULL OR j.id >= %(min_id)s::bigint)
   AND (%(max_id)s::bigint IS NULL OR j.id < %(max_id)s::bigint)
   AND (%(since)s::timestamptz IS NULL OR d.at >= %(since)s::timestamptz)
 ORDER BY j.id DESC
 LIMIT %(limit)s
"""

GET_JOB = """
SELECT j.id, j.task_name AS task, j.queue_name AS queue, j.status::text AS status,
       j.attempts, j.priority, j.lock, j.queueing_lock, j.scheduled_at, j.args,
       j.abort_requested, j.worker_id,
       (SELECT min(at) FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'deferred') AS created_at
  FROM procrastinate_jobs j
 WHERE j.id = %(job_id)s
"""

JOB_EVENTS = """
SELECT type::text AS type, at
  FROM procrastinate_events
 WHERE job_id = %(job_id)s
 ORDER BY at, id
"""

JOB_FAILURES = """
SELECT id, attempt, kind, reason, error_class, message, retryable, will_retry, issue_id,
       account_id, profile_id, worker, retry_state, pipeline_step_id, occurred_at
  FROM jobsys_failures
 WHERE job_id = %(job_id)s
 ORDER BY attempt, id
"""

JOB_RETRY_EVENTS = """
SELECT r.failure_id, r.decision, r.new_job_id, r.actor, r.batch_id, r.created_at
  FROM jobsys_retry_events r
 WHERE r.failure_id IN (SELECT id FROM jobsys_failures WHERE job_id = %(job_id)s)
 ORDER BY r.created_at, r.id
"""

JOB_PIPELINE = """
SELECT p.id, p.name, p.entity, p.status, p.created_at, p.finished_at, p.cancelled_by,
       s.step AS job_step
  FROM jobsys_pipeline_steps s
  JOIN jobsys_pipelines p ON p.id = s.pipeline_id
 WHERE s.job_id = %(job_id)s
 ORDER BY s.id DESC
 LIMIT 1
"""

PIPELINE_STEPS = """
SELECT step, stage, task, queue, status, job_id, attempts, updated_at, finished_at
  FROM jobsys_pipeline_steps
 WHERE pipeline_id = %(pipeline_id)s
 ORDER BY stage, id
"""


async def fetch_all(conn: Any, query: str, params: dict[str, Any] | None = None) -> list[Any]:
    """Rows of ``query`` as dicts (the connection's row factory, or dict_row)."""
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params or {})
        return list(await cur.fetchall())


async def fetch_one(conn: Any, query: str, params: dict[str, Any] | None = None) -> Any | None:
    rows = await fetch_all(conn, query, params)
    return rows[0] if rows else None
