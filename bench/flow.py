"""Claim throughput with flow control configured but not binding, side by side with
the same claim without it, in the same run on the same database.

"Without": the lane's one-statement claim (``jobsys.engine.manager.claim_jobs``), no
queue paused. "With": five other queues paused (rows in ``jobsys_queue_pauses``) and a
throttle on the queue that never binds (rate 1,000,000/s and concurrency 100,000 per
``account_id``, 50 accounts), so the lane claims through
``jobsys.engine.manager.claim_limited``, exactly as a worker would (one statement, a
call of ``jobsys_claim_limited_v1``: the limit's lock, then one query that checks
pauses, the key's recent starts and running jobs, takes and records the jobs). Each
round defers
``JOBS`` jobs, then claims ``CLAIM_SIZE`` at a time and marks them succeeded until none
is left; rounds alternate between the two so the machine's noise hits both. Reported:
median jobs claimed per second of each, and their ratio (target >= 0.9).
"""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.live import throwaway_database

JOBS = 2_000
CLAIM_SIZE = 10
ROUNDS = 5
QUEUE = "bench"
DEFER = (
    "SELECT procrastinate_defer_jobs_v1(array_agg(ROW(%s, 'bench.noop', 0, NULL, NULL, "
    "jsonb_build_object('account_id', g %% 50), NULL)::procrastinate_job_to_defer_v1)) "
    "FROM generate_series(1, %s) AS g"
)


async def _round(app: Any, url: str, worker_id: int, policy: Any) -> float:
    import psycopg

    from jobsys.engine import manager

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DEFER, (QUEUE, JOBS))
    claimed = 0
    started = time.perf_counter()
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        while True:
            if policy is None:
                rows = await manager.claim_jobs(app.connector, [QUEUE], worker_id, CLAIM_SIZE)
            else:
                rows, _full, _rated = await manager.claim_limited(
                    app.connector.pool, [QUEUE], worker_id, CLAIM_SIZE,
                    in_order=False, policy=policy, full=[],
                )  # fmt: skip
            if not rows:
                break
            claimed += len(rows)
            await conn.execute(
                "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = ANY(%s)",
                ([r["id"] for r in rows],),
            )
    elapsed = time.perf_counter() - started
    assert claimed == JOBS, f"claimed {claimed} of {JOBS}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM jobsys_flow_starts")
    return claimed / elapsed


async def _measure(url: str) -> dict[str, Any]:
    import psycopg

    from jobsys.flow.limits import LanePolicy, Limit
    from jobsys.lanes.execution import build_engine_app

    policy = LanePolicy((Limit("queue", QUEUE, "account_id", (1_000_000, 1.0), 100_000),))
    app = build_engine_app(url, max_size=4)
    without: list[float] = []
    with_flow: list[float] = []
    async with app.open_async():
        worker_id = await app.job_manager.register_worker()
        for _ in range(ROUNDS):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("DELETE FROM jobsys_queue_pauses")
            without.append(await _round(app, url, worker_id, None))
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(
                    "INSERT INTO jobsys_queue_pauses (queue, paused_by, target) "
                    "SELECT 'other_' || g, 'bench', 'other_' || g FROM generate_series(1, 5) g"
                )
            with_flow.append(await _round(app, url, worker_id, policy))
    a, b = statistics.median(without), statistics.median(with_flow)
    return {
        "jobs_per_round": JOBS,
        "claim_size": CLAIM_SIZE,
        "rounds": ROUNDS,
        "without_jobs_per_s": round(a, 1),
        "with_pause_rate_key_limit_jobs_per_s": round(b, 1),
        "ratio": round(b / a, 3),
        "target_ratio": 0.9,
    }


def run() -> dict[str, Any]:
    with throwaway_database() as url:
        result = asyncio.run(_measure(url))
    print("flow control, configured but not binding: claim throughput (median of rounds)")
    with_flow = result["with_pause_rate_key_limit_jobs_per_s"]
    print(f"  without                      {result['without_jobs_per_s']:10.1f} jobs/s")
    print(f"  with pauses, rate, key limit {with_flow:10.1f} jobs/s")
    print(f"  ratio                        {result['ratio']:10.3f} (target >= 0.9)")
    return result
