"""SQL the health checks read: waiting work, failure rates, stalled jobs, live lanes,
paused queues and when a queue's last pause ended.

Read-only over Procrastinate's tables, ``jobsys_worker_processes`` and (through the
flow domain) ``jobsys_queue_pauses`` and ``jobsys_queue_pause_events``.
"""

from __future__ import annotations

from typing import Any

from jobsys.db.query import fetch_all
from jobsys.engine.queries import QUEUE_OUTCOMES, QUEUE_STALLED, QUEUE_WAITING
from jobsys.flow import store as flow_store

LIVE_LANES = """
SELECT DISTINCT unnest(lanes) AS lane FROM jobsys_worker_processes
 WHERE status IN ('running', 'draining')
   AND last_heartbeat >= now() - make_interval(secs => %(dead_after)s)
"""


async def queue_waiting(conn: Any) -> list[dict[str, Any]]:
    return await fetch_all(conn, QUEUE_WAITING)


async def queue_outcomes(conn: Any, window_seconds: float) -> list[dict[str, Any]]:
    return await fetch_all(conn, QUEUE_OUTCOMES, {"window": window_seconds})


async def queue_stalled(conn: Any, dead_after_seconds: float) -> list[dict[str, Any]]:
    return await fetch_all(conn, QUEUE_STALLED, {"dead_after": dead_after_seconds})


async def live_lanes(conn: Any, dead_after_seconds: float) -> set[str]:
    rows = await fetch_all(conn, LIVE_LANES, {"dead_after": dead_after_seconds})
    return {str(r["lane"]) for r in rows}


async def paused_queues(conn: Any) -> set[str]:
    """The queues paused now (a pause with ``--for`` that ran out is not)."""
    return {str(p["queue"]) for p in await flow_store.active_pauses(conn)}
