"""The claim under flow limits against a real database: it takes what fits, passes over
keys at their limit to the others, records starts, and ``jobs show`` says which limit
holds a job."""

from __future__ import annotations

import asyncio
import json
import re
from pathlib import Path
from typing import Any

import psycopg
from rt_support import config_with, query

from jobsys.config import load
from jobsys.engine import manager
from jobsys.flow.limits import policy_for_lane

REPO = Path(__file__).resolve().parents[2]


def insert(db_url: str, accounts: list[int]) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        for account in accounts:
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES ('profiles', 'demo.refresh_profile', %s)",
                (json.dumps({"account_id": account}),),
            )


def claim(db_url: str, config_dir: Path, slots: int) -> list[tuple[Any, ...]]:
    config = load(config_dir)
    policy = policy_for_lane(config, config.lanes["base"])

    async def go() -> list[tuple[Any, ...]]:
        from jobsys.lanes.execution import build_engine_app

        app = build_engine_app(db_url, max_size=2)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            rows, _full, _rated = await manager.claim_limited(
                app.connector.pool, list(config.lanes["base"].queues), worker_id, slots,
                in_order=False, policy=policy, full=[],
            )  # fmt: skip
        return [(r["id"], r["args"]["account_id"]) for r in rows]

    return asyncio.run(go())


def test_concurrency_per_key_passes_over_full_keys(db_url: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    config_dir = config_with(tmp_path, "  profiles: {per_key: account_id, concurrency: 2}\n")
    insert(db_url, [1, 1, 1, 1, 1, 2, 2, 2, 3])
    first = claim(db_url, config_dir, 10)
    assert sorted(a for _, a in first) == [1, 1, 2, 2, 3]
    assert claim(db_url, config_dir, 10) == []  # everyone at the limit or done
    ledger = "SELECT bucket, count(*) FROM jobsys_flow_starts GROUP BY 1 ORDER BY 1"
    assert query(db_url, ledger) == [
        ("queue:profiles:1", 2), ("queue:profiles:2", 2), ("queue:profiles:3", 1)
    ]  # fmt: skip
    waiting = query(db_url, "SELECT min(id) FROM procrastinate_jobs WHERE status = 'todo' "
                            "AND args->>'account_id' = '1'")[0][0]  # fmt: skip
    query(db_url, "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes) "
                  "VALUES ('h:1', 'h', 1, '{base}')")  # fmt: skip
    shown = cli("--database-url", db_url, "jobs", "show", str(waiting), "--json",
                env={"JOBSYS_CONFIG_DIR": str(config_dir)})  # fmt: skip
    assert shown.exit_code == 0, shown.stderr
    assert shown.json()["waiting_because"] == "account_id 1 at its limit 2/2 running"
    # One of account 1's jobs ends: the next claim takes exactly one more of it.
    query(db_url, "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s",
          (first[0][0],))  # fmt: skip
    assert [a for _, a in claim(db_url, config_dir, 10)] == [1]


def test_a_task_limit_wins_over_its_queues_and_a_limit_without_a_key_is_one_bucket(
    db_url: str, tmp_path: Path
) -> None:
    """The claim's bucket rule (jobsys_claim_limited_v1, as jobsys.flow.limits.bucket_of):
    a job of a task with a limit falls under the task's limit, not its queue's; a limit
    without ``per_key`` is one bucket for all its jobs; other tasks of the queue fall
    under the queue's limit, per key."""
    config_dir = config_with(
        tmp_path,
        "  profiles: {per_key: account_id, concurrency: 1}\n"
        "  demo.refresh_profile: {concurrency: 2}\n",
    )
    insert(db_url, [1, 1, 2])  # demo.refresh_profile: the task's limit, 2 at once
    with psycopg.connect(db_url, autocommit=True) as conn:
        for account in (5, 5, 6):  # another task of the queue: the queue's limit, per key
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES ('profiles', 'demo.other', %s)",
                (json.dumps({"account_id": account}),),
            )
    assert sorted(a for _, a in claim(db_url, config_dir, 10)) == [1, 1, 5, 6]
    ledger = "SELECT bucket, count(*) FROM jobsys_flow_starts GROUP BY 1 ORDER BY 1"
    assert query(db_url, ledger) == [
        ("queue:profiles:5", 1), ("queue:profiles:6", 1), ("task:demo.refresh_profile:", 2)
    ]  # fmt: skip


def test_rate_per_key(db_url: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    config_dir = config_with(tmp_path, "  profiles: {per_key: account_id, rate: 2/h}\n")
    insert(db_url, [7, 7, 7, 8])
    assert sorted(a for _, a in claim(db_url, config_dir, 10)) == [7, 7, 8]
    query(db_url, "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE status = 'doing'")
    assert claim(db_url, config_dir, 10) == []  # finished, but the hour's window is full
    waiting = query(db_url, "SELECT id FROM procrastinate_jobs WHERE status = 'todo'")[0][0]
    query(db_url, "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes) "
                  "VALUES ('h:1', 'h', 1, '{base}')")  # fmt: skip
    shown = cli("--database-url", db_url, "jobs", "show", str(waiting), "--json",
                env={"JOBSYS_CONFIG_DIR": str(config_dir)})  # fmt: skip
    assert re.fullmatch(  # the window's end is 1 h after the first start, less the time since
        r"account_id 7: rate 2/h reached, next slot in (1h|59m)", shown.json()["waiting_because"]
    )


def test_queues_names_the_keys_a_limit_holds(db_url: str, tmp_path: Path, cli) -> None:  # type: ignore[no-untyped-def]
    config_dir = config_with(
        tmp_path,
        "  profiles: {per_key: account_id, concurrency: 2}\n"
        "  story_downloads: {per_key: account_id, rate: 2/h}\n",
    )
    insert(db_url, [1, 1, 1, 1, 2])
    assert sorted(a for _, a in claim(db_url, config_dir, 10)) == [1, 1, 2]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for _ in range(3):
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES ('story_downloads', 'demo.download_story', '{\"account_id\": 9}')"
            )
    config = load(config_dir)
    assert "story_downloads" in config.lanes["base"].queues
    assert len(claim(db_url, config_dir, 10)) == 2  # account 9's two starts of the hour
    env = {"JOBSYS_CONFIG_DIR": str(config_dir)}
    listed = cli("--database-url", db_url, "queues", "--json", env=env)
    assert listed.exit_code == 0, listed.stderr
    rows = {row["queue"]: row for row in listed.json()["items"]}
    assert rows["profiles"]["held"] == [
        {"bucket": "queue:profiles:1", "waiting": 2, "why": "account_id 1 at its limit 2/2 running"}
    ]
    (held,) = rows["story_downloads"]["held"]
    assert (held["bucket"], held["waiting"]) == ("queue:story_downloads:9", 1)
    assert re.fullmatch(r"account_id 9: rate 2/h reached, next slot in (1h|59m)", held["why"])
    assert all(
        row["held"] == [] for q, row in rows.items() if q not in ("profiles", "story_downloads")
    )
    table = cli("--database-url", db_url, "queues", "--wide", env={**env, "COLUMNS": "250"})
    assert table.exit_code == 0, table.stderr
    assert "account_id 1 at its limit 2/2 running" in table.stdout
    # Once account 1's jobs end, nothing holds it.
    query(db_url, "UPDATE procrastinate_jobs SET status = 'succeeded' "
                  "WHERE status = 'doing' AND queue_name = 'profiles'")  # fmt: skip
    listed = cli("--database-url", db_url, "queues", "--json", env=env)
    rows = {row["queue"]: row for row in listed.json()["items"]}
    assert rows["profiles"]["held"] == []


def test_a_limit_declared_on_the_task(db_url: str) -> None:
    from jobsys import tasks

    before = tasks.get("demo.refresh_profile")
    tasks.unregister("demo.refresh_profile")
    try:

        @tasks.task(
            queue="profiles", name="demo.refresh_profile", concurrency=1, per_key="account_id"
        )
        def refresh(account_id: int) -> None: ...

        insert(db_url, [1, 1, 2, 2, 3])
        taken = claim(db_url, REPO / "config", 10)
        assert sorted(a for _, a in taken) == [1, 2, 3]
        assert query(db_url, "SELECT DISTINCT split_part(bucket, ':', 2) "
                             "FROM jobsys_flow_starts") == [("demo.refresh_profile",)]  # fmt: skip
    finally:
        tasks.unregister("demo.refresh_profile")
        if before is not None:
            tasks.register(before)
