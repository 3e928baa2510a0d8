"""SQL of the schedule domain: entry state, ticks, fan-out runs, retention.

The one module of ``jobsys.schedule`` that holds SQL (statements that read jobs are in
``jobsys.engine.queries``). Jobs are inserted by ``jobsys.jobs.enqueue`` on the
caller's connection, so that a job and the row that accounts for it (a tick, a run's
cursor) commit or roll back together.
Every function takes a psycopg ``AsyncConnection``; none opens a transaction itself
unless its docstring says so.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from jobsys.engine.queries import ACTIVE_RUNS, DELETE_FINISHED_JOBS, LAST_TICKS, PENDING_ITEMS

# --- entry state and ticks -----------------------------------------------------------

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
RETURNING name, paused, paused_at, paused_by, high_water
"""


MISSED_COUNTS = """
SELECT name, count(*) AS missed
  FROM jobsys_schedule_ticks
 WHERE name = ANY(%(names)s::text[]) AND status = 'missed'
 GROUP BY name
"""


def jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value)


async def db_now(conn: Any) -> datetime:
    cur = await conn.execute(DB_NOW)
    row = await cur.fetchone()
    return _first(row)


async def ensure_entries(conn: Any, names: Sequence[str]) -> None:
    """A state row per entry; a new entry starts from now (nothing before is owed)."""
    await conn.execute(ENSURE_ENTRIES, {"names": list(names)})


async def read_entries(conn: Any, names: Sequence[str]) -> list[dict[str, Any]]:
    return await _all(conn, READ_ENTRIES, {"names": list(names)})


async def lock_entry(conn: Any, name: str) -> dict[str, Any] | None:
    """The entry's state row, locked; None when another scheduler holds it."""
    return await _one(conn, LOCK_ENTRY, {"name": name})


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
    row = await _one(conn, SET_PAUSED, {"name": name, "paused": paused, "by": by})
    assert row is not None
    return row


async def last_ticks(conn: Any, names: Sequence[str]) -> dict[str, dict[str, Any]]:
    rows = await _all(conn, LAST_TICKS, {"names": list(names)})
    return {row["name"]: row for row in rows}


async def missed_counts(conn: Any, names: Sequence[str]) -> dict[str, int]:
    rows = await _all(conn, MISSED_COUNTS, {"names": list(names)})
    return {row["name"]: int(row["missed"]) for row in rows}


# --- helpers shared by the schedule stores --------------------------------------------


def _first(row: Any) -> Any:
    if isinstance(row, dict):
        return next(iter(row.values()))
    return row[0]


async def _one(conn: Any, query: Any, params: dict[str, Any]) -> dict[str, Any] | None:
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchone()


async def _all(conn: Any, query: Any, params: dict[str, Any]) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return await cur.fetchall()


# --- fan-out runs -----------------------------------------------------------------------

#: Serialises run creation and hand-over per entry (overlap policy), not the batches.
LOCK_FANOUT_ENTRY = (
    "SELECT pg_advisory_xact_lock(hashtextextended('jobsys_fanout:' || %(entry)s, 0))"
)

INSERT_RUN = """
INSERT INTO jobsys_fanout_runs (entry, tick_at, status, source, task, queue, batch_size, spec)
VALUES (%(entry)s, %(tick_at)s, %(status)s, %(source)s, %(task)s, %(queue)s, %(batch_size)s,
        %(spec)s::jsonb)
ON CONFLICT (entry, tick_at) WHERE tick_at IS NOT NULL DO NOTHING
RETURNING id
"""

RUN_AT_TICK = (
    "SELECT id, status FROM jobsys_fanout_runs WHERE entry = %(entry)s AND tick_at = %(tick_at)s"
)


LOCK_RUN = "SELECT * FROM jobsys_fanout_runs WHERE id = %(id)s FOR UPDATE"

RECORD_BATCH = """
UPDATE jobsys_fanout_runs
   SET cursor = %(cursor)s,
       batches_done = batches_done + 1,
       items_enqueued = items_enqueued + %(items)s,
       first_item_job_id = least(first_item_job_id, %(first_job)s::bigint),
       last_item_job_id = greatest(last_item_job_id, %(last_job)s::bigint),
       status = %(status)s,
       finished_at = CASE WHEN %(status)s = 'running' THEN NULL ELSE clock_timestamp() END,
       updated_at = clock_timestamp()
 WHERE id = %(id)s
"""

START_QUEUED = """
UPDATE jobsys_fanout_runs SET status = 'running', started_at = clock_timestamp(),
       updated_at = clock_timestamp()
 WHERE id = %(id)s AND status = 'queued'
"""

NEXT_QUEUED = """
SELECT id, queue, spec FROM jobsys_fanout_runs
 WHERE entry = %(entry)s AND status = 'queued' ORDER BY id LIMIT 1
"""

RUN_COLUMNS = """
id, entry, tick_at, status, source, task, queue, batch_size, cursor, batches_done,
items_enqueued, started_at, updated_at, finished_at,
coalesce(finished_at, clock_timestamp()) - started_at AS duration
"""

LIST_RUNS = f"""
SELECT {RUN_COLUMNS}
  FROM jobsys_fanout_runs
 WHERE (%(entry)s::text IS NULL OR entry = %(entry)s)
   AND (%(status)s::text IS NULL OR status = %(status)s)
 ORDER BY id DESC
 LIMIT %(limit)s
"""

GET_RUN = f"SELECT {RUN_COLUMNS}, spec FROM jobsys_fanout_runs WHERE id = %(id)s"

COLUMN_TYPE = """
SELECT format_type(a.atttypid, a.atttypmod) AS type
  FROM pg_attribute a
 WHERE a.attrelid = to_regclass(%(table)s) AND a.attname = %(column)s AND NOT a.attisdropped
"""

TABLE_EXISTS = "SELECT to_regclass(%(table)s) IS NOT NULL AS found"


def source_identifier(table: str) -> Any:
    """``table`` or ``schema.table`` as a quoted SQL identifier."""
    from psycopg import sql

    return sql.Identifier(*table.split("."))


def more_query(spec: dict[str, Any]) -> Any:
    from psycopg import sql

    ident = sql.Identifier(spec["id_column"])
    return sql.SQL(
        "SELECT EXISTS (SELECT 1 FROM {table} WHERE {id} > %(cursor)s AND ({where})) AS more"
    ).format(
        id=ident,
        table=source_identifier(spec["table"]),
        where=sql.SQL(spec.get("where") or "TRUE"),
    )


def remaining_query(spec: dict[str, Any], *, first: bool) -> Any:
    from psycopg import sql

    ident = sql.Identifier(spec["id_column"])
    after = sql.SQL("TRUE") if first else sql.SQL("{} > %(cursor)s").format(ident)
    return sql.SQL("SELECT count(*) AS remaining FROM {table} WHERE {after} AND ({where})").format(
        table=source_identifier(spec["table"]),
        after=after,
        where=sql.SQL(spec.get("where") or "TRUE"),
    )


def probe_query(spec: dict[str, Any]) -> Any:
    """A statement that fails unless the source and its filter are valid SQL."""
    from psycopg import sql

    return sql.SQL("EXPLAIN SELECT {id} FROM {table} WHERE ({where}) ORDER BY {id} LIMIT 1").format(
        id=sql.Identifier(spec["id_column"]),
        table=source_identifier(spec["table"]),
        where=sql.SQL(spec.get("where") or "TRUE"),
    )


async def lock_fanout_entry(conn: Any, entry: str) -> None:
    await conn.execute(LOCK_FANOUT_ENTRY, {"entry": entry})


async def insert_run(conn: Any, params: dict[str, Any]) -> int | None:
    row = await _one(conn, INSERT_RUN, {**params, "spec": jsonb(params["spec"])})
    return None if row is None else int(row["id"])


async def run_at_tick(conn: Any, entry: str, tick_at: datetime) -> dict[str, Any] | None:
    return await _one(conn, RUN_AT_TICK, {"entry": entry, "tick_at": tick_at})


async def active_runs(conn: Any, entry: str) -> list[dict[str, Any]]:
    return await _all(conn, ACTIVE_RUNS, {"entry": entry})


async def lock_run(conn: Any, run_id: int) -> dict[str, Any] | None:
    return await _one(conn, LOCK_RUN, {"id": run_id})


async def record_batch(
    conn: Any,
    run_id: int,
    *,
    cursor: int | None,
    items: int,
    status: str,
    job_ids: tuple[int | None, int | None] = (None, None),
) -> None:
    """Record a batch's progress; ``job_ids``: the smallest and largest item job id it
    enqueued (widen the run's range)."""
    await conn.execute(
        RECORD_BATCH,
        {
            "id": run_id,
            "cursor": cursor,
            "items": items,
            "status": status,
            "first_job": job_ids[0],
            "last_job": job_ids[1],
        },
    )


async def next_queued(conn: Any, entry: str) -> dict[str, Any] | None:
    return await _one(conn, NEXT_QUEUED, {"entry": entry})


async def start_queued(conn: Any, run_id: int) -> None:
    await conn.execute(START_QUEUED, {"id": run_id})


async def list_runs(
    conn: Any, *, entry: str | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    return await _all(conn, LIST_RUNS, {"entry": entry, "status": status, "limit": limit})


async def get_run(conn: Any, run_id: int) -> dict[str, Any] | None:
    return await _one(conn, GET_RUN, {"id": run_id})


async def pending_items(conn: Any, run_id: int) -> int:
    row = await _one(conn, PENDING_ITEMS, {"id": run_id})
    return int(row["n"]) if row else 0


async def column_type(conn: Any, table: str, column: str) -> str | None:
    row = await _one(conn, COLUMN_TYPE, {"table": table, "column": column})
    return None if row is None else str(row["type"])


async def table_exists(conn: Any, table: str) -> bool:
    row = await _one(conn, TABLE_EXISTS, {"table": table})
    return bool(row and row["found"])


async def has_more(conn: Any, spec: dict[str, Any], cursor: int) -> bool:
    row = await _one(conn, more_query(spec), {"cursor": cursor})
    return bool(row and row["more"])


async def remaining(conn: Any, spec: dict[str, Any], cursor: int | None) -> int:
    row = await _one(conn, remaining_query(spec, first=cursor is None), {"cursor": cursor})
    return int(row["remaining"]) if row else 0


# --- retention ------------------------------------------------------------------------


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
}


async def delete_batch(conn: Any, what: str, params: dict[str, Any]) -> int:
    """One batch of one retention query in its own short transaction; rows deleted."""
    async with conn.transaction():
        cur = await conn.execute(PURGE_QUERIES[what], params)
        return int(cur.rowcount or 0)
