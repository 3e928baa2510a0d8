"""Synthetic Procrastinate history for the live benchmarks (SQL only, triggers off).

``populate(conn, jobs)`` writes ``jobs`` jobs spread over the last day, with the
mix a busy system has: mostly finished, a backlog waiting, some running, and the
events Procrastinate would have recorded (deferred, started, succeeded/failed).
"""

from __future__ import annotations

from typing import Any

QUEUES = (
    "sync",
    "engagements",
    "story_downloads",
    "post_downloads",
    "profiles",
    "messages",
    "avatars",
    "maintenance",
    "default",
    "ai_face_queue",
    "ai_ocr_queue",
)

# Status by position: among the newest 3%, half wait and some run; everything else
# finished (2% failed, 0.5% cancelled), so the last minutes have throughput too.
POPULATE_JOBS = """
INSERT INTO procrastinate_jobs (id, queue_name, task_name, args, status, attempts, priority)
SELECT g,
       (%(queues)s::text[])[1 + (g %% array_length(%(queues)s::text[], 1))],
       'demo.refresh_profile',
       jsonb_build_object('account_id', g %% 20000),
       CASE WHEN g > %(jobs)s * 0.97 AND g %% 2 = 0 THEN 'todo'
            WHEN g > %(jobs)s * 0.97 AND g %% 31 = 1 THEN 'doing'
            WHEN g %% 50 = 0 THEN 'failed'
            WHEN g %% 200 = 1 THEN 'cancelled'
            ELSE 'succeeded' END::procrastinate_job_status,
       CASE WHEN g > %(jobs)s * 0.97 AND g %% 2 = 0 THEN 0 ELSE 1 END,
       0
  FROM generate_series(1, %(jobs)s) AS g
"""

POPULATE_EVENTS = """
INSERT INTO procrastinate_events (job_id, type, at)
SELECT j.id, e.type::procrastinate_job_event_type,
       now() - make_interval(secs => 86400.0 * (1 - j.id::float8 / %(jobs)s)) + e.delay
  FROM procrastinate_jobs j
  CROSS JOIN LATERAL (VALUES
        ('deferred', interval '0'),
        (CASE WHEN j.status NOT IN ('todo', 'cancelled') THEN 'started' END,
         interval '150 milliseconds'),
        (CASE WHEN j.status IN ('succeeded', 'failed') THEN j.status::text END,
         interval '400 milliseconds')
       ) AS e(type, delay)
 WHERE e.type IS NOT NULL
 ORDER BY j.id
"""


def populate(conn: Any, jobs: int) -> None:
    """Fill an empty migrated database (sync psycopg connection, autocommit)."""
    conn.execute("SET session_replication_role = replica")  # no triggers, no NOTIFY
    conn.execute(POPULATE_JOBS, {"jobs": jobs, "queues": list(QUEUES)})
    conn.execute(POPULATE_EVENTS, {"jobs": jobs})
    conn.execute("SELECT setval('procrastinate_jobs_id_seq', %s)", (jobs,))
    conn.execute("SET session_replication_role = origin")
    conn.execute("VACUUM ANALYZE procrastinate_jobs")
    conn.execute("VACUUM ANALYZE procrastinate_events")
