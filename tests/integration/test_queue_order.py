"""``order: strict``: a lane takes its queues in their listed order, so no job of a later
queue starts while one of an earlier queue is claimable (whatever their priorities);
the default order (priority, then id) is unchanged."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import psycopg
from rt_support import WorkerProcess, defer_rows, environment, events, wait_until, write_app

from jobsys.engine import manager


def insert(db_url: str, rows: list[tuple[str, int]]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for queue, priority in rows:
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, args) "
                "VALUES (%s, 't', %s, %s)",
                (queue, priority, json.dumps({})),
            )


def claim(db_url: str, queues: list[str], limit: int, *, in_order: bool) -> list[tuple[Any, ...]]:
    async def go() -> list[tuple[Any, ...]]:
        from jobsys.lanes.execution import build_engine_app

        app = build_engine_app(db_url, max_size=2)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            rows = await manager.claim_jobs(
                app.connector, queues, worker_id, limit, in_order=in_order
            )
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute("UPDATE procrastinate_jobs SET status = 'todo', worker_id = NULL")
        return [(r["queue_name"], r["priority"]) for r in rows]

    return asyncio.run(go())


def test_strict_order_takes_queues_in_their_listed_order(db_url: str) -> None:
    insert(db_url, [("default", 5), ("sync", 0), ("default", 9), ("sync", 1), ("profiles", 3)])
    queues = ["sync", "profiles", "default"]
    assert claim(db_url, queues, 3, in_order=True) == [("sync", 1), ("sync", 0), ("profiles", 3)]
    assert claim(db_url, queues, 10, in_order=True) == [
        ("sync", 1), ("sync", 0), ("profiles", 3), ("default", 9), ("default", 5)
    ]  # fmt: skip
    # Another order, another claim; the default order is priority, then id.
    assert claim(db_url, ["default", "sync", "profiles"], 2, in_order=True) == [
        ("default", 9), ("default", 5)
    ]  # fmt: skip
    assert claim(db_url, queues, 3, in_order=False) == [("default", 9), ("default", 5),
                                                        ("profiles", 3)]  # fmt: skip


def _ordered_app(tmp_path: Path, order: str) -> Path:
    config = write_app(tmp_path, poll=30)
    queues = config / "queues.yaml"
    queues.write_text(
        queues.read_text().replace(
            "  queues: [q_base, maintenance]",
            f"{order}\n  queues: [q_sync, q_default, q_base, maintenance]",
        )
    )
    return config


def _claimed_at(db_url: str) -> dict[str, list[float]]:
    """Queue -> when each of its jobs was claimed (Procrastinate's ``started`` events)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT j.queue_name, extract(epoch FROM e.at)::float8 FROM procrastinate_events e "
            "JOIN procrastinate_jobs j ON j.id = e.job_id WHERE e.type = 'started'"
        ).fetchall()
    out: dict[str, list[float]] = {}
    for queue, at in rows:
        out.setdefault(queue, []).append(at)
    return out


def test_no_default_job_starts_while_a_sync_job_is_claimable(db_url: str, tmp_path: Path) -> None:
    """Two worker processes: a default job is taken only once every sync job has been
    taken (by either), so it starts after the last sync job's claim."""
    env = environment(tmp_path, db_url, _ordered_app(tmp_path, "  order: strict"))
    # Everything is due before the workers start; default jobs even rank higher.
    defer_rows(db_url, "rt.sleep", "q_default",
               [{"tag": f"d-{i}", "seconds": 0.02} for i in range(40)])  # fmt: skip
    defer_rows(db_url, "rt.sleep", "q_sync",
               [{"tag": f"s-{i}", "seconds": 0.02} for i in range(40)])  # fmt: skip
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE procrastinate_jobs SET priority = 10 WHERE queue_name = 'q_default'")
    workers = [WorkerProcess(env, tmp_path, "--lane", "base") for _ in range(2)]
    try:
        wait_until(lambda: len([e for e in events(tmp_path) if e[0] == "end"]) == 80, 60,
                   "all 80 jobs")  # fmt: skip
    finally:
        for worker in workers:
            worker.kill()
    claimed = _claimed_at(db_url)
    starts = sorted((at, tag) for event, tag, at in events(tmp_path) if event == "start")
    first_default = min(at for at, tag in starts if tag.startswith("d-"))
    # A claim locks the sync jobs it takes before it commits (its ``started`` events
    # carry its start time); a claim that passes over them to default jobs runs after.
    assert max(claimed["q_sync"]) <= first_default, [tag for _, tag in starts][:50]


def test_weights_share_the_claims_in_proportion(db_url: str, tmp_path: Path) -> None:
    """``weights: {q_sync: 3, q_default: 1}`` with two worker processes and both queues
    busy throughout: about three sync jobs start for one default job."""
    order = "  order: weights\n  weights: {q_sync: 3, q_default: 1}"
    env = environment(tmp_path, db_url, _ordered_app(tmp_path, order))
    defer_rows(db_url, "rt.sleep", "q_default",
               [{"tag": f"d-{i}", "seconds": 0.01} for i in range(300)])  # fmt: skip
    defer_rows(db_url, "rt.sleep", "q_sync",
               [{"tag": f"s-{i}", "seconds": 0.01} for i in range(300)])  # fmt: skip
    workers = [WorkerProcess(env, tmp_path, "--lane", "base") for _ in range(2)]
    try:
        wait_until(lambda: len([e for e in events(tmp_path) if e[0] == "start"]) >= 240, 60,
                   "240 starts")  # fmt: skip
    finally:
        for worker in workers:
            worker.kill()
    # The first 200 starts: both queues still have jobs waiting (300 each).
    first = [tag for _, tag in sorted((at, tag) for e, tag, at in events(tmp_path)
                                      if e == "start")][:200]  # fmt: skip
    share = sum(1 for tag in first if tag.startswith("s-")) / len(first)
    print(f"sync share of the first 200 starts: {share:.2f} (weight 3 of 4: 0.75)")
    assert 0.62 <= share <= 0.88, share
