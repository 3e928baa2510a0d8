"""SQL of unique jobs (``jobsys.jobs.unique``): the advisory lock, the look-up of a job
that counts, the key row. Run inside the insert's transaction; the lock is held until
that transaction ends, so the look-up and the insert of one key never interleave
across sessions (READ COMMITTED: the look-up after the lock sees every job a previous
holder committed)."""

from __future__ import annotations

from typing import Any

from jobsys.db.query import execute, fetch_one

#: Namespace of jobsys's unique-key advisory locks (the second key of the pair).
LOCK_NAMESPACE = 727_100_015

LOCK_KEY = "SELECT pg_advisory_xact_lock(%(namespace)s, hashtext(%(key)s))"

#: The newest job of this key that counts: in an active state at any age, or in a
#: finished state deferred within the period.
EXISTING = """
SELECT u.job_id
  FROM jobsys_unique_jobs u
  JOIN procrastinate_jobs j ON j.id = u.job_id
 WHERE u.key = %(key)s
   AND (
        ('waiting' = ANY(%(active)s::text[])
          AND j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now()))
     OR ('scheduled' = ANY(%(active)s::text[])
          AND j.status = 'todo' AND j.scheduled_at > now())
     OR ('running' = ANY(%(active)s::text[]) AND j.status = 'doing')
     OR (j.status::text = ANY(%(finished)s::text[])
          AND u.created_at > now() - make_interval(secs => %(for_seconds)s))
   )
 ORDER BY u.job_id DESC
 LIMIT 1
"""

REMEMBER = "INSERT INTO jobsys_unique_jobs (job_id, key) VALUES (%(job_id)s, %(key)s)"


async def lock_key(conn: Any, key: str) -> None:
    await execute(conn, LOCK_KEY, {"namespace": LOCK_NAMESPACE, "key": key})


async def existing(
    conn: Any, key: str, active: list[str], finished: list[str], for_seconds: float
) -> int | None:
    params = {"key": key, "active": active, "finished": finished, "for_seconds": for_seconds}
    row = await fetch_one(conn, EXISTING, params)
    return int(row["job_id"]) if row else None


async def remember(conn: Any, job_id: int, key: str) -> None:
    await execute(conn, REMEMBER, {"job_id": job_id, "key": key})
