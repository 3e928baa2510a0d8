"""Read-side SQL of live operations: the dashboard snapshot, metrics and the jobs browser.

Every query is named here and takes bound parameters only. They read Procrastinate's
tables directly (JobManager has no bounded, filtered, newest-first listing) and the
jobsys tables of the other domains, never writing. Each is built to stay under a few
milliseconds with millions of jobs: active jobs through ``ix_jobsys_live_jobs_active_queue``,
recent events through ``ix_jobsys_live_events_type_at`` (revision 0005_live_read_indexes).
"""

from __future__ import annotations

from typing import Any

# --- Dashboard --------------------------------------------------------------------

# Failed attempts recorded in the last hour (RECENT FAILURES' total).
FAILURES_SINCE = """
SELECT count(*) AS n FROM jobsys_failures
 WHERE occurred_at >= now() - make_interval(secs => %(seconds)s)
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


# --- Metrics ----------------------------------------------------------------------


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
