"""SQL of the lanes domain: worker process rows and heartbeats, the queue overview.

Procrastinate's own operations (finish, retry, register workers) go through its
JobManager; these are the queries it has no operation for, among them claiming
several jobs in one round trip.
"""

from __future__ import annotations

from typing import Any

from jobsys.engine.queries import (
    DRAIN_STATE,
    HEARTBEAT,
    QUEUE_OVERVIEW,
    RUNNING_ON_PROCESSES,
    WAITING_BY_QUEUE,
)

REGISTER_PROCESS = """
INSERT INTO jobsys_worker_processes (
    id, hostname, pid, lanes, concurrency, status, started_at, last_heartbeat
)
VALUES (
    %(id)s, %(hostname)s, %(pid)s, %(lanes)s, %(concurrency)s::jsonb, 'running', %(started_at)s,
    now()
)
"""

SET_LANE_WORKERS = """
UPDATE jobsys_worker_processes SET lane_worker_ids = %(worker_ids)s WHERE id = %(id)s
"""


MARK_STOPPED = """
UPDATE jobsys_worker_processes
   SET status = 'stopped', stopped_at = now(), last_heartbeat = now()
 WHERE id = %(id)s
"""

#: A process that fenced itself while the database was away (``fence_notes``): its
#: row still says running, draining or (reaped) dead.
MARK_FENCED = """
UPDATE jobsys_worker_processes
   SET status = 'fenced', stopped_at = coalesce(stopped_at, %(at)s)
 WHERE id = %(id)s AND status IN ('running', 'draining', 'dead')
"""


async def _rows(conn: Any, query: str, params: dict[str, Any]) -> list[tuple[Any, ...]]:
    # Works on pool connections (tuple rows) and jobsys.db.connect ones (dict rows) alike.
    from psycopg.rows import tuple_row

    async with conn.cursor(row_factory=tuple_row) as cur:
        await cur.execute(query, params)
        return list(await cur.fetchall()) if cur.description else []


async def register_process(conn: Any, params: dict[str, Any]) -> None:
    await _rows(conn, REGISTER_PROCESS, params)


async def set_lane_workers(conn: Any, process_id: str, worker_ids: list[int]) -> None:
    await _rows(conn, SET_LANE_WORKERS, {"id": process_id, "worker_ids": worker_ids})


async def heartbeat(
    conn: Any, process_id: str, worker_ids: list[int], status: str
) -> tuple[int, int]:
    """Beat once; returns (process rows, Procrastinate worker rows) updated."""
    rows = await _rows(
        conn, HEARTBEAT, {"id": process_id, "worker_ids": worker_ids, "status": status}
    )
    return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)


async def mark_fenced(conn: Any, process_id: str, at: Any) -> None:
    await _rows(conn, MARK_FENCED, {"id": process_id, "at": at})


async def mark_stopped(conn: Any, process_id: str) -> None:
    await _rows(conn, MARK_STOPPED, {"id": process_id})


async def drain_state(conn: Any, queues: list[str], worker_ids: list[int]) -> tuple[int, int]:
    """(1 if a due job waits in ``queues`` else 0, jobs running on ``worker_ids``)."""
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


# --- jobsys workers ------------------------------------------------------------------

#: Worker processes for ``jobsys workers``: the live ones and those that ended (dead,
#: fenced, stopped) since ``%(ended_since)s``; with ``%(every)s``, every row.
PROCESS_COLUMNS = """
       id, hostname AS host, pid, lanes, concurrency, status, started_at, last_heartbeat,
       stopped_at, lane_worker_ids,
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
