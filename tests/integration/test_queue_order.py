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


def test_no_default_job_starts_while_a_sync_job_is_claimable(db_url: str, tmp_path: Path) -> None:
    config = write_app(tmp_path, poll=30)
    queues = config / "queues.yaml"
    text = queues.read_text()
    queues.write_text(
        text.replace(
            "  queues: [q_base, maintenance]",
            "  order: strict\n  queues: [q_sync, q_default, q_base, maintenance]",
        )
    )
    env = environment(tmp_path, db_url, config)
    # Everything is due before the worker starts; default jobs even rank higher.
    defer_rows(db_url, "rt.sleep", "q_default",
               [{"tag": f"d-{i}", "seconds": 0.02} for i in range(30)])  # fmt: skip
    defer_rows(db_url, "rt.sleep", "q_sync",
               [{"tag": f"s-{i}", "seconds": 0.02} for i in range(30)])  # fmt: skip
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("UPDATE procrastinate_jobs SET priority = 10 WHERE queue_name = 'q_default'")
    worker = WorkerProcess(env, tmp_path, "--lane", "base")
    try:
        wait_until(lambda: len([e for e in events(tmp_path) if e[0] == "end"]) == 60, 60,
                   "all 60 jobs")  # fmt: skip
    finally:
        worker.kill()
    starts = sorted((at, tag) for event, tag, at in events(tmp_path) if event == "start")
    last_sync = max(at for at, tag in starts if tag.startswith("s-"))
    first_default = min(at for at, tag in starts if tag.startswith("d-"))
    assert last_sync <= first_default, [tag for _, tag in starts][:40]
