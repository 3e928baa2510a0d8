"""The search-index pass never keeps the lanes from their jobs (real PostgreSQL).

Its batch locks the jobs it copies ``FOR KEY SHARE`` until the statement commits. With
claims locking ``FOR UPDATE SKIP LOCKED`` a claim during that statement skipped every
due job, found nothing and the lane slept until its next poll: the ~30 s stall of
``test_rate_per_account_across_four_workers`` (poll_interval_seconds: 30), seen in
its ledger as one 30.1 s gap starting while a pass copied all 2,000 jobs. Here the
batch's locks are held open in a transaction while the claims (plain and under flow
limits) and a bulk cancel run: they must take the jobs. The pass also runs on its
own connection, so a pool whose every connection is in use does not hold it up."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import psycopg
from rt_support import config_with
from waiting import wait_until

from jobsys.config import load
from jobsys.engine import manager, queries
from jobsys.flow.limits import policy_for_lane
from jobsys.jobs.search_index import APPLICATION_NAME, IndexResult, SearchIndexer


def insert(conn: Any, queue: str, task: str, accounts: list[int]) -> list[int]:
    return [
        int(
            conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
                "VALUES (%s, %s, %s) RETURNING id",
                (queue, task, json.dumps({"account_id": a})),
            ).fetchone()[0]
        )
        for a in accounts
    ]


def hold_a_batch(conn: Any, upto: int) -> int:
    """Run the pass's batch statement in ``conn``'s open transaction: its locks stay
    held until the caller's transaction ends. Returns how many jobs it copied."""
    row = conn.execute(queries.SEARCH_INDEX_BATCH, {"upto": upto, "batch": 5000}).fetchone()
    assert row is not None, "the state row is free"
    return int(row[1])


def key_share_locked(conn: Any, ids: list[int]) -> int:
    """How many of ``ids`` another transaction holds locked (a probe that would wait)."""
    rows = conn.execute(
        "SELECT id FROM procrastinate_jobs WHERE id = ANY(%s) FOR UPDATE SKIP LOCKED", (ids,)
    ).fetchall()
    return len(ids) - len(rows)


def claim_plain(db_url: str, queues: list[str], slots: int) -> list[int]:
    async def go() -> list[int]:
        from jobsys.lanes.execution import build_engine_app

        app = build_engine_app(db_url, max_size=2)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            rows = await manager.claim_jobs(app.connector, queues, worker_id, slots)
        return [int(r["id"]) for r in rows]

    return asyncio.run(go())


def claim_limited(db_url: str, config_dir: Path, slots: int) -> list[int]:
    config = load(config_dir)
    lane = config.lanes["base"]
    policy = policy_for_lane(config, lane)

    async def go() -> list[int]:
        from jobsys.lanes.execution import build_engine_app

        app = build_engine_app(db_url, max_size=2)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            rows, _full, _rated = await manager.claim_limited(
                app.connector.pool, list(lane.queues), worker_id, slots,
                in_order=False, policy=policy, full=[],
            )  # fmt: skip
        return [int(r["id"]) for r in rows]

    return asyncio.run(go())


def test_claims_and_bulk_cancel_take_the_jobs_a_search_batch_is_copying(
    cli: Any, db_url: str, tmp_path: Path
) -> None:
    config_dir = config_with(tmp_path, "  profiles: {per_key: account_id, rate: 5/s}\n")
    with (
        psycopg.connect(db_url, autocommit=True) as batch,
        psycopg.connect(db_url, autocommit=True) as probe,
    ):
        plain = insert(probe, "default", "demo.noop", [1, 2, 3, 4])
        limited = insert(probe, "profiles", "demo.refresh_profile", [1, 1, 2, 2, 3])
        to_cancel = insert(probe, "ai_ocr_queue", "demo.noop", [5, 6, 7])
        with batch.transaction():
            assert hold_a_batch(batch, max(to_cancel)) == len(plain + limited + to_cancel)
            everything = plain + limited + to_cancel
            assert key_share_locked(probe, everything) == len(everything)
            assert sorted(claim_plain(db_url, ["default"], 10)) == plain
            assert sorted(claim_limited(db_url, config_dir, 10)) == limited
            result = cli(
                "--database-url", db_url, "jobs", "cancel", "--all",
                "--queue", "ai_ocr_queue", "--yes", "--json",
            )  # fmt: skip
            assert result.exit_code == 0, result.stderr
            assert result.json()["done"] == {"cancelled": len(to_cancel)}
        statuses = probe.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1 ORDER BY 1"
        ).fetchall()
        assert statuses == [("cancelled", 3), ("doing", 9)]


def test_the_pass_runs_on_its_own_connection_while_the_pool_is_all_in_use(
    db_url: str, settings: Any
) -> None:
    """Every connection of the worker's pool held (the lanes claiming and finishing):
    the pass still runs, on its own connection (named in ``pg_stat_activity``), and
    copies the job. Borrowing from the pool, it waited for the pool's timeout and
    failed."""
    from jobsys.clock import now
    from jobsys.config.application import load_config
    from jobsys.lanes.execution import build_engine_app

    indexer = SearchIndexer(load_config(settings))
    with psycopg.connect(db_url, autocommit=True) as conn:
        (job_id,) = insert(conn, "default", "demo.noop", [42])

    async def passes() -> tuple[int, list[str]]:
        app = build_engine_app(db_url, min_size=1, max_size=1)
        async with app.open_async(), app.connector.pool.connection() as held:
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                await asyncio.wait_for(indexer.run_pass(app, now()), timeout=60)
                cur = await held.execute("SELECT indexed_up_to FROM jobsys_job_search_state")
                row = await cur.fetchone()
                assert row is not None
                if row[0] >= job_id:
                    break
                await asyncio.sleep(0.05)
            cur = await held.execute(
                "SELECT application_name FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                "ORDER BY application_name"
            )
            names = [r[0] for r in await cur.fetchall()]
        await indexer.close()
        return int(row[0]), names

    cursor, names = asyncio.run(passes())
    assert cursor >= job_id
    assert APPLICATION_NAME in names


def test_a_pass_gives_up_on_a_row_locked_too_long_and_the_next_one_goes_on(
    db_url: str, settings: Any
) -> None:
    """A job row held ``FOR UPDATE`` (a bulk delete's chunk) past the pass connection's
    lock_timeout: the pass returns (no error, the service keeps running) without moving
    the cursor past it; once released, a later pass copies it."""
    from jobsys.clock import now
    from jobsys.config.application import load_config
    from jobsys.lanes.execution import build_engine_app

    indexer = SearchIndexer(load_config(settings))

    async def passes(until: Any) -> IndexResult:
        app = build_engine_app(db_url, max_size=1)
        async with app.open_async():
            deadline = time.monotonic() + 120
            result = IndexResult()
            while time.monotonic() < deadline:
                result = await indexer.run_pass(app, now())
                if until(result):
                    break
                await asyncio.sleep(0.05)
        await indexer.close()
        return result

    def state(conn: Any) -> tuple[int, int]:
        row = conn.execute(
            "SELECT indexed_up_to, coalesce(pending_up_to, 0) FROM jobsys_job_search_state"
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    with psycopg.connect(db_url, autocommit=True) as conn, psycopg.connect(db_url) as locker:
        (job_id,) = insert(conn, "default", "demo.noop", [7])
        # The first pass records the stretch up to the job (copied by a later pass);
        # the lock is taken after it, so its transaction is not one the stretch waits for.
        asyncio.run(passes(lambda r: state(conn)[1] >= job_id))
        assert state(conn) == (0, job_id)
        locker.execute("SELECT 1 FROM procrastinate_jobs WHERE id = %s FOR UPDATE", (job_id,))
        waited = asyncio.run(passes(lambda r: r.lock_waited))
        assert waited.lock_waited
        assert state(conn)[0] < job_id
        locker.rollback()
        done = asyncio.run(passes(lambda r: r.indexed_up_to >= job_id))
        assert done.indexed_up_to >= job_id
        found = conn.execute(
            "SELECT count(*) FROM jobsys_job_search WHERE job_id = %s", (job_id,)
        ).fetchone()
        assert found == (1,)


def test_a_producer_that_drew_its_id_but_has_no_xid_yet_is_waited_for(
    db_url: str, settings: Any
) -> None:
    """An INSERT draws its id before it writes the row, and a transaction gets its xid
    only at its first write: a producer between the two is in no snapshot's list. The
    pass must still wait for it (it holds the job table's write lock), else its job
    commits below the cursor without a search row and ``--arg-contains`` never finds
    it. Found in review; with the snapshot alone the cursor passed the id here."""
    from jobsys.clock import now
    from jobsys.config.application import load_config
    from jobsys.lanes.execution import build_engine_app

    indexer = SearchIndexer(load_config(settings))

    async def passes(count: int) -> IndexResult:
        app = build_engine_app(db_url, max_size=1)
        result = IndexResult()
        async with app.open_async():
            for _ in range(count):
                result = await indexer.run_pass(app, now())
        await indexer.close()
        return result

    with psycopg.connect(db_url, autocommit=True) as conn, psycopg.connect(db_url) as producer:
        insert(conn, "default", "demo.noop", [1])
        # The producer: the table's write lock, then an id, and no xid (a nextval that
        # writes WAL assigns one, one call in 32: draw again in a new transaction then).
        for _ in range(3):
            producer.execute("LOCK TABLE procrastinate_jobs IN ROW EXCLUSIVE MODE")
            drawn = producer.execute(
                "SELECT nextval(pg_get_serial_sequence('procrastinate_jobs', 'id'))"
            ).fetchone()
            xid = producer.execute("SELECT pg_current_xact_id_if_assigned()").fetchone()
            if xid is not None and xid[0] is None:
                break
            producer.rollback()
        assert drawn is not None and xid is not None and xid[0] is None, "no xid-less draw"
        job_id = int(drawn[0])
        # Passes record the stretch up to (at least) the drawn id and try to settle it.
        asyncio.run(passes(4))
        cursor = conn.execute("SELECT indexed_up_to FROM jobsys_job_search_state").fetchone()
        assert cursor is not None and int(cursor[0]) < job_id, (cursor, job_id)
        producer.execute(
            "INSERT INTO procrastinate_jobs (id, queue_name, task_name, args) "
            "VALUES (%s, 'default', 'demo.noop', %s)",
            (job_id, json.dumps({"note": "drawn before the snapshot"})),
        )
        producer.commit()
        # Passes until the cursor passes the id: a snapshot lists the transactions of
        # the whole server, so an open transaction in another database (a test running
        # beside this one) may hold the stretch back for a while.
        wait_until(
            lambda: asyncio.run(passes(1)).indexed_up_to >= job_id, 30, "the cursor past the id"
        )
        found = conn.execute(
            "SELECT args_text FROM jobsys_job_search WHERE job_id = %s", (job_id,)
        ).fetchone()
        assert found is not None and "drawn before the snapshot" in found[0]
