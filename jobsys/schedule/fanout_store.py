"""SQL of fan-out runs (``jobsys_fanout_runs``) and of their source tables (the
cursor walk, the checks of a source). Every function takes a psycopg
``AsyncConnection``; none opens a transaction itself."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from jobsys.db import query
from jobsys.engine.queries import ACTIVE_RUNS, PENDING_ITEMS

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
    from psycopg.types.json import Jsonb

    row = await query.fetch_one(conn, INSERT_RUN, {**params, "spec": Jsonb(params["spec"])})
    return None if row is None else int(row["id"])


async def run_at_tick(conn: Any, entry: str, tick_at: datetime) -> dict[str, Any] | None:
    return await query.fetch_one(conn, RUN_AT_TICK, {"entry": entry, "tick_at": tick_at})


async def active_runs(conn: Any, entry: str) -> list[dict[str, Any]]:
    return await query.fetch_all(conn, ACTIVE_RUNS, {"entry": entry})


async def lock_run(conn: Any, run_id: int) -> dict[str, Any] | None:
    return await query.fetch_one(conn, LOCK_RUN, {"id": run_id})


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
    return await query.fetch_one(conn, NEXT_QUEUED, {"entry": entry})


async def start_queued(conn: Any, run_id: int) -> None:
    await conn.execute(START_QUEUED, {"id": run_id})


async def list_runs(
    conn: Any, *, entry: str | None, status: str | None, limit: int
) -> list[dict[str, Any]]:
    return await query.fetch_all(
        conn, LIST_RUNS, {"entry": entry, "status": status, "limit": limit}
    )


async def get_run(conn: Any, run_id: int) -> dict[str, Any] | None:
    return await query.fetch_one(conn, GET_RUN, {"id": run_id})


async def pending_items(conn: Any, run_id: int) -> int:
    row = await query.fetch_one(conn, PENDING_ITEMS, {"id": run_id})
    return int(row["n"]) if row else 0


async def column_type(conn: Any, table: str, column: str) -> str | None:
    row = await query.fetch_one(conn, COLUMN_TYPE, {"table": table, "column": column})
    return None if row is None else str(row["type"])


async def table_exists(conn: Any, table: str) -> bool:
    row = await query.fetch_one(conn, TABLE_EXISTS, {"table": table})
    return bool(row and row["found"])


async def has_more(conn: Any, spec: dict[str, Any], cursor: int) -> bool:
    row = await query.fetch_one(conn, more_query(spec), {"cursor": cursor})
    return bool(row and row["more"])


async def remaining(conn: Any, spec: dict[str, Any], cursor: int | None) -> int:
    row = await query.fetch_one(
        conn, remaining_query(spec, first=cursor is None), {"cursor": cursor}
    )
    return int(row["remaining"]) if row else 0
