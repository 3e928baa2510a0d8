"""Claiming several jobs per round trip (``jobsys.lanes.store.claim_jobs``) keeps
Procrastinate's fetch semantics: the same jobs, in the same order, as that many calls
of Procrastinate's own ``fetch_job``; concurrent claimers never share a job or run
two jobs of one lock at once."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from procrastinate.jobs import Status

from jobsys.lanes import store

QUEUES = ["q1", "q2"]


@pytest.fixture
async def app(db_url: str) -> AsyncIterator[Any]:
    from jobsys.app import build_procrastinate_app

    procrastinate_app = build_procrastinate_app(db_url, max_size=6)
    async with procrastinate_app.open_async():
        yield procrastinate_app


def insert_jobs(db_url: str, rows: list[tuple[str, int, str | None, int]]) -> None:
    """(queue, priority, lock, scheduled in seconds from now: negative is due)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        for queue, priority, lock, offset in rows:
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, args, "
                "scheduled_at) VALUES (%s, 't', %s, %s, %s, now() + make_interval(secs => %s))",
                (queue, priority, lock, json.dumps({"n": 1}), offset),
            )


def mixed_jobs(seed: int) -> list[tuple[str, int, str | None, int]]:
    rnd = random.Random(seed)
    return [
        (
            rnd.choice(["q1", "q2", "other"]),
            rnd.choice([0, 0, 1, 5]),
            rnd.choice([None, None, None, "a", "b", "c"]),
            rnd.choice([-10, -10, -10, 3600]),
        )
        for _ in range(60)
    ]


def reset_to_todo(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL")


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_batch_claims_what_repeated_single_fetches_claim(
    app: Any, db_url: str, seed: int
) -> None:
    insert_jobs(db_url, mixed_jobs(seed))
    worker_id = await app.job_manager.register_worker()
    for limit in (1, 4, 17, 100):
        oracle = []
        for _ in range(limit):
            job = await app.job_manager.fetch_job(queues=QUEUES, worker_id=worker_id)
            if job is None:
                break
            oracle.append(job.id)
        reset_to_todo(db_url)
        claimed = await store.claim_jobs(app.connector, QUEUES, worker_id, limit)
        reset_to_todo(db_url)
        assert [r["id"] for r in claimed] == oracle, f"limit {limit}"
        assert all(r["status"] == "doing" and r["worker_id"] == worker_id for r in claimed)
    # Something was actually claimable and something was not (the rule was exercised).
    total = await store.claim_jobs(app.connector, QUEUES, worker_id, 1000)
    assert 0 < len(total) < 60


async def test_only_one_job_per_lock_is_claimed_until_it_finishes(app: Any, db_url: str) -> None:
    insert_jobs(db_url, [("q1", 0, "acct-7", -1)] * 3 + [("q1", 0, None, -1)])
    worker_id = await app.job_manager.register_worker()
    first = await store.claim_jobs(app.connector, QUEUES, worker_id, 10)
    locks = [r["lock"] for r in first]
    assert len(locks) == 2 and set(locks) == {"acct-7", None}
    assert await store.claim_jobs(app.connector, QUEUES, worker_id, 10) == []
    locked = next(r for r in first if r["lock"] == "acct-7")
    await app.job_manager.finish_job_by_id_async(
        locked["id"], status=Status.SUCCEEDED, delete_job=False
    )
    again = await store.claim_jobs(app.connector, QUEUES, worker_id, 10)
    assert [r["lock"] for r in again] == ["acct-7"] and again[0]["id"] > locked["id"]


async def test_concurrent_claimers_never_share_a_job(app: Any, db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'q1', 't', '{}' FROM generate_series(1, 600)"
        )
    workers = [await app.job_manager.register_worker() for _ in range(4)]
    claimed: dict[int, list[int]] = {w: [] for w in workers}

    async def claimer(worker_id: int) -> None:
        while rows := await store.claim_jobs(app.connector, QUEUES, worker_id, 7):
            claimed[worker_id].extend(r["id"] for r in rows)

    await asyncio.gather(*(claimer(w) for w in workers))
    every = [job for ids in claimed.values() for job in ids]
    assert len(every) == len(set(every)) == 600
    assert sum(1 for ids in claimed.values() if ids) >= 2  # they really raced
    with psycopg.connect(db_url) as conn:
        owners = dict(
            conn.execute(
                "SELECT id, worker_id FROM procrastinate_jobs WHERE status = 'doing'"
            ).fetchall()
        )
    assert all(owners[job] == w for w, ids in claimed.items() for job in ids)
