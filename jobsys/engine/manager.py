"""Named operations on Procrastinate's jobs, beside its own ``JobManager``.

Procrastinate's ``manager.py`` is the model: every operation has a name, its SQL is in
:mod:`jobsys.engine.queries` (or is Procrastinate's own named query), and callers never
see a ``procrastinate_*`` name. Operations that take a ``connection`` run on it, inside
the caller's transaction; those that take a ``connector`` use the worker's pool.

Inserting jobs is not here: it has one path, :mod:`jobsys.engine.inserts`.
"""

from __future__ import annotations

import functools
import time
from typing import Any

from jobsys.engine import queries


@functools.cache
def offline_job_manager() -> Any:
    """Procrastinate's JobManager for explicit connections only (its connector is
    never opened: with a connection given it only formats and runs the query)."""
    import procrastinate
    from procrastinate.manager import JobManager

    return JobManager(procrastinate.PsycopgConnector())


def procrastinate_query(name: str) -> str:
    """Procrastinate's own named query (``retry_job``, ``finish_job``, ``cancel_job``)."""
    from procrastinate import sql

    return str(sql.queries[name])


async def claim_jobs(
    connector: Any, queues: list[str], worker_id: int, limit: int, *, in_order: bool = False
) -> list[dict[str, Any]]:
    """Mark up to ``limit`` due jobs of ``queues`` as ``doing`` for ``worker_id``, in
    Procrastinate's fetch order (priority, then id), or with ``in_order`` queue by queue
    in the order of ``queues``; their rows, in that order."""
    from procrastinate.sync_psycopg_connector import wrap_exceptions
    from psycopg.rows import dict_row

    params = {"queues": queues, "worker_id": worker_id, "limit": limit, "in_order": in_order}
    with wrap_exceptions():  # psycopg's errors as Procrastinate's, as its connector does
        async with connector.pool.connection() as conn:
            # One statement (queries.CLAIM: the claim and its planner setting in a
            # function whose plan the server keeps).
            cur = conn.cursor(row_factory=dict_row)
            await cur.execute(queries.CLAIM, params)
            rows = await cur.fetchall()
    rank = {q: i for i, q in enumerate(queues)} if in_order else {}
    return sorted(rows, key=lambda r: (rank.get(r["queue_name"], 0), -r["priority"], r["id"]))


async def claim_limited(
    pool: Any,
    queues: list[str],
    worker_id: int,
    limit: int,
    *,
    in_order: bool,
    policy: Any,
    full: list[str],
    prune_seconds: float | None = None,
    binding: bool = False,
) -> tuple[list[dict[str, Any]], dict[str, float], dict[int, tuple[float, float]]]:
    """The claim under flow limits; ``policy`` (jobsys.flow.limits.LanePolicy) says
    what fits. One statement (queries.CLAIM_LIMITED) takes what fits now; only when it
    left candidates (a bucket at its limit) does the exact path claim the rest, in one
    transaction. With ``binding`` (the caller knows a bucket at its limit) the exact
    path claims at once. Returns the rows taken (in claim order), the buckets found
    full (seconds until worth trying again) and the ids taken under a rate: (seconds
    before which each must not start, the round trip of the reading its start was
    planned from: how much later than its planned start by the database's clock it may
    start when it starts on time)."""
    from jobsys.db import query

    params = {
        "queues": queues,
        "worker_id": worker_id,
        "limit": limit,
        "in_order": in_order,
        "full": full,
        "pad": policy.unmarked_pad_seconds,
        **policy.params,
    }
    async with pool.connection() as conn:
        rows: list[dict[str, Any]] = []
        rated: dict[int, tuple[float, float]] = {}
        held = 1
        if not binding:
            sent = time.monotonic()
            answer = await query.fetch_all(conn, queries.CLAIM_LIMITED, params)
            fast = sorted((r for r in answer if r["id"] is not None), key=lambda r: r["rank"])
            held = sum(int(r["held"]) for r in answer if r["id"] is None)
            rtt = time.monotonic() - sent
            rated = {int(r["id"]): (0.0, rtt) for r in fast if r["rated"]}
            rows = [{k: v for k, v in r.items() if k not in _FAST_EXTRA} for r in fast]
        full_now: dict[str, float] = {}
        if held and len(rows) < limit:
            more, full_now, more_rated = await _claim_limited_exact(
                conn, params, policy, in_order=in_order, limit=limit - len(rows)
            )
            rows += more
            rated.update(more_rated)
        if prune_seconds is not None:
            await query.execute(conn, queries.PRUNE_STARTS, {"keep_seconds": prune_seconds})
    return rows, full_now, rated


#: Columns of the fast claim's answer that are not the job's.
_FAST_EXTRA = ("bucket", "rated", "rank", "held")


async def _claim_limited_exact(
    conn: Any, params: dict[str, Any], policy: Any, *, in_order: bool, limit: int
) -> tuple[list[dict[str, Any]], dict[str, float], dict[int, tuple[float, float]]]:
    """The exact limited claim, in one transaction: the limits locked, candidates, their
    buckets' state, the choice in Python, take and record."""
    from jobsys.db import query

    params = {**params, "scan": policy.scan(limit)}
    async with conn.transaction():
        candidates = await query.fetch_all(
            conn, queries.limited_candidates(policy.kinds, in_order=in_order), params
        )
        buckets = sorted({c["bucket"] for c in candidates if c["bucket"]})
        states: dict[str, tuple[int, tuple[float, ...]]] = {}
        base = None
        if buckets:
            await query.execute(conn, queries.LOCK_BUCKETS, {**params, "buckets": buckets})
            spans = [policy.window_of(b) for b in buckets]
            sent = time.monotonic()
            for row in await query.fetch_all(
                conn, queries.BUCKET_STATE, {"buckets": buckets, "spans": spans}
            ):
                states[row["bucket"]] = (int(row["running"]), tuple(row["recent"]))
                base = row["read_at"] if base is None else max(base, row["read_at"])
        # The waits are from the state's reading (by the database's clock, before this
        # reply): counted from here, not from the commit's reply, a rated job starts on
        # time instead of a few round trips late in every window.
        read_at = time.monotonic()
        rtt = read_at - sent if buckets else 0.0
        decision = policy.decide([(c["id"], c["bucket"]) for c in candidates], states, limit)
        rows: list[dict[str, Any]] = []
        if decision.ids:
            rows = await query.fetch_all(
                conn, queries.TAKE_JOBS, {"worker_id": params["worker_id"], "ids": decision.ids}
            )
            started = [(b, i) for b, i in zip(decision.buckets, decision.ids, strict=True) if b]
            if started:
                ahead = [
                    decision.rated[i] + policy.unmarked_pad_seconds if i in decision.rated else 0.0
                    for _, i in started
                ]
                await query.execute(
                    conn,
                    queries.RECORD_STARTS,
                    {
                        "buckets": [b for b, _ in started],
                        "ids": [i for _, i in started],
                        "ahead": ahead,
                        "base": base,
                    },
                )
    order = {job_id: n for n, job_id in enumerate(decision.ids)}
    late = time.monotonic() - read_at
    return (
        sorted(rows, key=lambda r: order[r["id"]]),
        decision.full,
        {job_id: (max(wait - late, 0.0), rtt) for job_id, wait in decision.rated.items()},
    )


async def bucket_states(conn: Any, buckets: list[str], spans: list[float]) -> list[dict[str, Any]]:
    """What runs and what started recently in each bucket (no lock: for showing)."""
    from jobsys.db import query

    return await query.fetch_all(conn, queries.BUCKET_STATE, {"buckets": buckets, "spans": spans})


async def waiting_keys(
    conn: Any, queues: list[str], key: str | None, *, scan: int, limit: int
) -> list[dict[str, Any]]:
    """The next due waiting jobs of ``queues`` grouped by queue, task and argument
    ``key`` (queries.WAITING_KEYS)."""
    from jobsys.db import query

    params = {"queues": queues, "key": key, "scan": scan, "limit": limit}
    return await query.fetch_all(conn, queries.WAITING_KEYS, params)


async def unstarted_jobs(
    connector: Any, worker_id: int, running: list[int], limit: int
) -> list[dict[str, Any]]:
    """Up to ``limit`` jobs in ``doing`` for ``worker_id`` that are not in ``running``."""
    return list(
        await connector.execute_query_all_async(
            queries.UNSTARTED_JOBS, worker_id=worker_id, running=running, limit=limit
        )
    )


async def merge_retry_into_sibling(connector: Any, job_id: int) -> int | None:
    """A retry of ``job_id`` collided with a sibling waiting under its queueing lock:
    note it on the job's latest failure; the sibling's id (None: no sibling)."""
    rows = await connector.execute_query_all_async(queries.MERGE_RETRY_INTO_SIBLING, job_id=job_id)
    return int(rows[0]["id"]) if rows else None


async def hand_to_reaper(connector: Any, job_id: int, *, worker_id: int | None = None) -> bool:
    """Detach a ``doing`` job from its worker (only from ``worker_id`` when given): the
    reaper's dead-worker rules settle it. False when no such job was detached."""
    rows = await connector.execute_query_all_async(
        queries.HAND_TO_REAPER, job_id=job_id, worker_id=worker_id
    )
    return bool(rows)


async def orphaned_jobs(
    connector: Any, worker_id: int, running: list[int], min_age_seconds: float
) -> list[int]:
    """Jobs ``doing`` for ``worker_id`` it does not run, started over ``min_age_seconds``
    ago."""
    rows = await connector.execute_query_all_async(
        queries.ORPHANED_JOBS, worker_id=worker_id, running=running, min_age=min_age_seconds
    )
    return [int(r["id"]) for r in rows]


async def cancel_job(conn: Any, job_id: int, *, abort: bool = False) -> bool:
    """Procrastinate's cancel on ``conn``: a waiting job is cancelled; with ``abort``, a
    running one is asked to stop. False when the job is in neither state."""
    return bool(
        await offline_job_manager().cancel_job_by_id_async(job_id, abort=abort, connection=conn)
    )


async def wake_queues(conn: Any, first_job_per_queue: dict[str, int]) -> None:
    """Wake the workers of each queue, as Procrastinate's insert trigger does (it sends
    nothing when a job goes back to ``todo`` by an update)."""
    from jobsys.engine import channels

    for queue, job_id in sorted(first_job_per_queue.items()):
        payload = channels.job_ready_payload(job_id)
        for channel in (channels.queue_channel(queue), channels.ANY_QUEUE_CHANNEL):
            await conn.execute(queries.NOTIFY, {"channel": channel, "payload": payload})
