"""SQL of the scheduler's state: each entry's state row (high-water mark, paused) and
its ticks. Fan-out runs are in :mod:`jobsys.schedule.fanout_store`, retention's
deletes in :mod:`jobsys.schedule.retention_store`; statements that read jobs are in
``jobsys.engine.queries``.

Jobs are inserted by ``jobsys.jobs.enqueue`` on the caller's connection, so that a job
and the row that accounts for it (a tick, a run's cursor) commit or roll back together.
Every function takes a psycopg ``AsyncConnection``; none opens a transaction itself
unless its docstring says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobsys.db import query
from jobsys.engine.queries import LAST_TICKS

ENSURE_ENTRIES = """
INSERT INTO jobsys_schedule_entries (name, high_water)
SELECT unnest(%(names)s::text[]), clock_timestamp()
ON CONFLICT (name) DO NOTHING
"""

READ_ENTRIES = """
SELECT name, paused, high_water, paused_at, paused_by, clock_timestamp() AS db_now
  FROM jobsys_schedule_entries
 WHERE name = ANY(%(names)s::text[])
"""

DB_NOW = "SELECT clock_timestamp() AS db_now"

LOCK_ENTRY = """
SELECT name, paused, high_water, clock_timestamp() AS db_now
  FROM jobsys_schedule_entries
 WHERE name = %(name)s
   FOR UPDATE SKIP LOCKED
"""

CLAIM_TICK = """
INSERT INTO jobsys_schedule_ticks (name, tick_at, status)
VALUES (%(name)s, %(tick_at)s, %(status)s)
ON CONFLICT (name, tick_at) DO NOTHING
RETURNING tick_at
"""

SET_TICK_JOB = """
UPDATE jobsys_schedule_ticks SET job_id = %(job_id)s, status = %(status)s
 WHERE name = %(name)s AND tick_at = %(tick_at)s
"""

RECORD_MISSED = """
INSERT INTO jobsys_schedule_ticks (name, tick_at, status)
SELECT %(name)s, unnest(%(ticks)s::timestamptz[]), 'missed'
ON CONFLICT (name, tick_at) DO NOTHING
"""

ADVANCE_HIGH_WATER = """
UPDATE jobsys_schedule_entries
   SET high_water = greatest(coalesce(high_water, '-infinity'), %(high_water)s),
       updated_at = now()
 WHERE name = %(name)s
"""

SET_PAUSED = """
INSERT INTO jobsys_schedule_entries (name, paused, paused_at, paused_by, high_water)
VALUES (%(name)s, %(paused)s, CASE WHEN %(paused)s THEN now() END,
        CASE WHEN %(paused)s THEN %(by)s END, clock_timestamp())
ON CONFLICT (name) DO UPDATE
   SET paused = EXCLUDED.paused,
       paused_at = EXCLUDED.paused_at,
       paused_by = EXCLUDED.paused_by,
       -- Resuming starts from now: ticks that fell while paused are not owed.
       high_water = CASE WHEN EXCLUDED.paused THEN jobsys_schedule_entries.high_water
                         ELSE greatest(jobsys_schedule_entries.high_water, clock_timestamp())
                    END,
       updated_at = now()
 -- Already so: nothing written (who paused it and when stay; a resume of a running
 -- entry would move its high-water mark past a tick not yet enqueued).
 WHERE jobsys_schedule_entries.paused IS DISTINCT FROM EXCLUDED.paused
RETURNING name, paused, paused_at, paused_by, high_water
"""


MISSED_COUNTS = """
SELECT name, count(*) AS missed
  FROM jobsys_schedule_ticks
 WHERE name = ANY(%(names)s::text[]) AND status = 'missed'
 GROUP BY name
"""


async def db_now(conn: Any) -> datetime:
    cur = await conn.execute(DB_NOW)
    row = await cur.fetchone()
    return row["db_now"] if isinstance(row, dict) else row[0]


async def ensure_entries(conn: Any, names: Sequence[str]) -> None:
    """A state row per entry; a new entry starts from now (nothing before is owed)."""
    await conn.execute(ENSURE_ENTRIES, {"names": list(names)})


async def read_entries(conn: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    return await query.fetch_all(conn, READ_ENTRIES, {"names": list(names)})


async def lock_entry(conn: Any, name: str) -> dict[str, Any] | None:
    """The entry's state row, locked; None when another scheduler holds it."""
    return await query.fetch_one(conn, LOCK_ENTRY, {"name": name})


async def claim_tick(conn: Any, name: str, tick_at: datetime, status: str) -> bool:
    cur = await conn.execute(CLAIM_TICK, {"name": name, "tick_at": tick_at, "status": status})
    return await cur.fetchone() is not None


async def set_tick_job(
    conn: Any, name: str, tick_at: datetime, job_id: int | None, status: str
) -> None:
    await conn.execute(
        SET_TICK_JOB, {"name": name, "tick_at": tick_at, "job_id": job_id, "status": status}
    )


async def record_missed(conn: Any, name: str, ticks: Sequence[datetime]) -> None:
    if ticks:
        await conn.execute(RECORD_MISSED, {"name": name, "ticks": list(ticks)})


async def advance_high_water(conn: Any, name: str, high_water: datetime) -> None:
    await conn.execute(ADVANCE_HIGH_WATER, {"name": name, "high_water": high_water})


async def set_paused(conn: Any, name: str, paused: bool, by: str) -> dict[str, Any]:
    """The entry's state after the pause or resume, with ``changed`` false when it was
    so already (nothing written)."""
    row = await query.fetch_one(conn, SET_PAUSED, {"name": name, "paused": paused, "by": by})
    if row is not None:
        return {**row, "changed": True}
    row = await query.fetch_one(conn, READ_ENTRIES, {"names": [name]})
    assert row is not None
    return {**row, "changed": False}


async def last_ticks(conn: Any, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = await query.fetch_all(conn, LAST_TICKS, {"names": list(names)})
    return {row["name"]: row for row in rows}


async def missed_counts(conn: Any, names: Sequence[str]) -> dict[str, int]:
    rows = await query.fetch_all(conn, MISSED_COUNTS, {"names": list(names)})
    return {row["name"]: int(row["missed"]) for row in rows}
