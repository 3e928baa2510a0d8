"""SQL of flow control: queue pauses, their audit, and the pause notification.

A pause or resume runs as one transaction that first takes a transaction-level
advisory lock per queue (in name order, so two operators acting on overlapping sets
cannot deadlock): concurrent actions on a queue are serialised, the audit rows come
in the order the actions took effect, and the last one wins. The NOTIFY is sent in
the same transaction, so workers hear of a pause only once it is visible.
"""

from __future__ import annotations

import json
from typing import Any

from jobsys.db import query
from jobsys.engine import manager
from jobsys.engine.queries import PAUSE_ACTIVE, WAIT_FACTS

#: Workers LISTEN here; the payload names the queues and the action.
CHANNEL = "jobsys_queue_pauses"

#: The rule the claim applies (``jobsys.engine.queries.CLAIM_JOBS``, with
#: ``NOT_PAUSED``) and every read here.
ACTIVE = PAUSE_ACTIVE

LOCK_QUEUES = """
SELECT count(pg_advisory_xact_lock(hashtext('jobsys_queue_pause'), hashtext(q.queue)))
  FROM unnest(%(queues)s::text[]) AS q(queue)
"""

ACTIVE_BEFORE = f"""
SELECT pause.queue FROM jobsys_queue_pauses AS pause
 WHERE pause.queue = ANY(%(queues)s::text[]) AND {ACTIVE}
"""

PAUSE = """
INSERT INTO jobsys_queue_pauses AS pause (queue, paused_at, paused_by, reason, until, target)
SELECT q.queue, now(), %(actor)s, %(reason)s,
       now() + make_interval(secs => %(for_seconds)s), %(target)s
  FROM unnest(%(queues)s::text[]) AS q(queue)
ON CONFLICT (queue) DO UPDATE
   SET paused_at = EXCLUDED.paused_at, paused_by = EXCLUDED.paused_by,
       reason = EXCLUDED.reason, until = EXCLUDED.until, target = EXCLUDED.target
"""

RESUME = """
DELETE FROM jobsys_queue_pauses WHERE queue = ANY(%(queues)s::text[])
"""

RECORD = """
INSERT INTO jobsys_queue_pause_events (queue, action, actor, reason, until, target, was_paused)
SELECT q.queue, %(action)s, %(actor)s, %(reason)s,
       now() + make_interval(secs => %(for_seconds)s), %(target)s,
       q.queue = ANY(%(was_paused)s::text[])
  FROM unnest(%(queues)s::text[]) AS q(queue)
"""

NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"

#: Pauses in effect on ``queues`` (all queues when NULL), with their age and time left
#: by the database's clock.
ACTIVE_PAUSES = f"""
SELECT pause.queue, pause.paused_at, pause.paused_by, pause.reason, pause.until, pause.target,
       extract(epoch FROM now() - pause.paused_at)::float8 AS paused_seconds,
       extract(epoch FROM pause.until - now())::float8 AS remaining_seconds
  FROM jobsys_queue_pauses AS pause
 WHERE {ACTIVE}
   AND (%(queues)s::text[] IS NULL OR pause.queue = ANY(%(queues)s::text[]))
 ORDER BY pause.queue
"""

#: When the last pause of each queue ended, for the queues where it has, in seconds
#: ago by the database's clock: the earlier of its ``until`` (a ``--for`` pause that
#: ran out ended then, even if a resume came later) and the first resume after it. Read
#: from the audit, since a resume deletes the pause row; ``id`` is the order in which
#: the actions took effect (they are serialised per queue). A pause re-issued while in
#: force replaces the row, so the last pause event is the pause that was in force.
PAUSE_ENDS = """
SELECT last.queue, extract(epoch FROM now() - last.ended_at)::float8 AS ended_seconds
  FROM (
      SELECT pause.queue,
             least(pause.until, (
                 SELECT resume.created_at FROM jobsys_queue_pause_events AS resume
                  WHERE resume.queue = pause.queue AND resume.action = 'resume'
                    AND resume.id > pause.id
                  ORDER BY resume.id
                  LIMIT 1
             )) AS ended_at
        FROM (
            SELECT DISTINCT ON (queue) id, queue, until
              FROM jobsys_queue_pause_events
             WHERE action = 'pause'
               AND (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
             ORDER BY queue, id DESC
        ) AS pause
  ) AS last
 WHERE last.ended_at <= now()
"""

#: A job under a rate starts: its ledger row (its planned start plus ``pad`` until now)
#: takes its planned start plus how late it started (``late``, measured by the worker
#: and bounded by the round trip its plan came from) less ``slack``, or, with ``late``
#: NULL (recorded before it starts), the later of its planned start and now less
#: ``slack``. Windows are counted ``2 * slack`` longer than the limit's window
#: (jobsys.flow.limits.RATE_MARGIN_SECONDS), so real starts still never exceed the
#: limit, and a window does not reopen later by the workers' latency every time.
MARK_START = """
UPDATE jobsys_flow_starts
   SET started_at = CASE
       WHEN %(late)s::float8 IS NULL
       THEN greatest(started_at - make_interval(secs => %(pad)s),
                     clock_timestamp() - make_interval(secs => %(slack)s))
       ELSE started_at - make_interval(secs => %(pad)s)
            + make_interval(secs => greatest(%(late)s::float8 - %(slack)s, 0))
   END
 WHERE id = (SELECT max(id) FROM jobsys_flow_starts WHERE job_id = %(job_id)s)
"""

EVENTS = """
SELECT id, queue, action, actor, reason, until, target, was_paused, created_at
  FROM jobsys_queue_pause_events
 WHERE (%(queues)s::text[] IS NULL OR queue = ANY(%(queues)s::text[]))
 ORDER BY id DESC
 LIMIT %(limit)s
"""


async def set_paused(
    conn: Any,
    queues: list[str],
    *,
    paused: bool,
    actor: str,
    target: str,
    reason: str | None = None,
    for_seconds: float | None = None,
) -> list[str]:
    """Pause (or resume) ``queues`` in one transaction, record one audit row per queue
    and announce it; returns the queues that were paused just before."""
    queues = sorted(set(queues))
    params = {
        "queues": queues,
        "actor": actor,
        "target": target,
        "reason": reason if paused else None,
        "for_seconds": for_seconds if paused else None,
        "action": "pause" if paused else "resume",
    }
    async with conn.transaction():
        await query.execute(conn, LOCK_QUEUES, params)
        before = [r["queue"] for r in await query.fetch_all(conn, ACTIVE_BEFORE, params)]
        await query.execute(conn, PAUSE if paused else RESUME, params)
        await query.execute(conn, RECORD, {**params, "was_paused": before})
        payload = json.dumps({"action": params["action"], "queues": queues})
        await query.execute(conn, NOTIFY, {"channel": CHANNEL, "payload": payload})
    return before


async def active_pauses(conn: Any, queues: list[str] | None = None) -> list[dict[str, Any]]:
    return await query.fetch_all(conn, ACTIVE_PAUSES, {"queues": queues})


async def pause_ends(conn: Any, queues: list[str] | None = None) -> dict[str, float]:
    """Seconds since the last pause of each of ``queues`` (all when None) ended, for
    those once paused and not paused now (resumed, or a ``--for`` pause ran out)."""
    rows = await query.fetch_all(conn, PAUSE_ENDS, {"queues": queues})
    return {str(r["queue"]): max(float(r["ended_seconds"]), 0.0) for r in rows}


async def wait_facts(
    conn: Any,
    *,
    scheduled_at: Any,
    lock: str | None,
    lane: str,
    lane_queues: list[str],
    dead_after_seconds: float,
) -> dict[str, Any]:
    params = {
        "scheduled_at": scheduled_at,
        "lock": lock,
        "lane": lane,
        "lane_queues": lane_queues,
        "dead_after": dead_after_seconds,
    }
    row = await query.fetch_one(conn, WAIT_FACTS, params)
    assert row is not None
    return row


async def bucket_states(conn: Any, buckets: list[str], spans: list[float]) -> list[dict[str, Any]]:
    """What runs and what started recently in each bucket (for showing: no lock)."""
    return await manager.bucket_states(conn, buckets, spans)


async def waiting_keys(
    conn: Any, queues: list[str], key: str | None, *, scan: int, limit: int
) -> list[dict[str, Any]]:
    return await manager.waiting_keys(conn, queues, key, scan=scan, limit=limit)


async def mark_start(
    conn: Any, job_id: int, *, pad: float, slack: float, late: float | None
) -> None:
    params = {"job_id": job_id, "pad": pad, "slack": slack, "late": late}
    await query.execute(conn, MARK_START, params)


async def events(conn: Any, queues: list[str] | None, limit: int) -> list[dict[str, Any]]:
    return await query.fetch_all(conn, EVENTS, {"queues": queues, "limit": limit})
