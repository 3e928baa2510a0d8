"""Claiming several jobs per round trip (``jobsys.engine.manager.claim_jobs``) keeps
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

from jobsys.engine import manager, queries

QUEUES = ["q1", "q2"]


@pytest.fixture
async def app(db_url: str) -> AsyncIterator[Any]:
    from jobsys.lanes.execution import build_engine_app

    procrastinate_app = build_engine_app(db_url, max_size=6)
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
        claimed = await manager.claim_jobs(app.connector, QUEUES, worker_id, limit)
        reset_to_todo(db_url)
        assert [r["id"] for r in claimed] == oracle, f"limit {limit}"
        assert all(r["status"] == "doing" and r["worker_id"] == worker_id for r in claimed)
    # Something was actually claimable and something was not (the rule was exercised).
    total = await manager.claim_jobs(app.connector, QUEUES, worker_id, 1000)
    assert 0 < len(total) < 60


async def test_only_one_job_per_lock_is_claimed_until_it_finishes(app: Any, db_url: str) -> None:
    insert_jobs(db_url, [("q1", 0, "acct-7", -1)] * 3 + [("q1", 0, None, -1)])
    worker_id = await app.job_manager.register_worker()
    first = await manager.claim_jobs(app.connector, QUEUES, worker_id, 10)
    locks = [r["lock"] for r in first]
    assert len(locks) == 2 and set(locks) == {"acct-7", None}
    assert await manager.claim_jobs(app.connector, QUEUES, worker_id, 10) == []
    locked = next(r for r in first if r["lock"] == "acct-7")
    await app.job_manager.finish_job_by_id_async(
        locked["id"], status=Status.SUCCEEDED, delete_job=False
    )
    again = await manager.claim_jobs(app.connector, QUEUES, worker_id, 10)
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
        while rows := await manager.claim_jobs(app.connector, QUEUES, worker_id, 7):
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


class ReplyDroppingProxy:
    """A TCP proxy to the test server that, once armed, lets the first claim reach the
    server and then cuts the connection before the reply comes back: the claim commits
    on the server but the client only sees a dropped connection."""

    def __init__(self, db_url: str) -> None:
        from psycopg.conninfo import conninfo_to_dict

        self.target = conninfo_to_dict(db_url)
        self.armed = False
        self.dropped = 0

    async def start(self) -> str:
        from psycopg.conninfo import make_conninfo

        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        params = {k: v for k, v in self.target.items() if k not in ("host", "port")}
        return make_conninfo(**params, host="127.0.0.1", port=str(port))

    async def _upstream(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host = str(self.target.get("host") or "127.0.0.1")
        port = int(self.target.get("port") or 5432)
        if host.startswith("/"):  # the embedded server: a Unix socket only
            return await asyncio.open_unix_connection(f"{host}/.s.PGSQL.{port}")
        return await asyncio.open_connection(host, port)

    async def _handle(self, client_r: Any, client_w: Any) -> None:
        server_r, server_w = await self._upstream()
        cut = asyncio.Event()

        async def to_server() -> None:
            while (data := await client_r.read(65536)) and not cut.is_set():
                server_w.write(data)
                await server_w.drain()
                if self.armed and b"jobsys_claim_v1(" in data:  # the claim (queries.CLAIM)
                    self.armed, self.dropped = False, self.dropped + 1
                    cut.set()
                    await asyncio.sleep(0.5)  # the server runs and commits the claim...
                    break

        async def to_client() -> None:
            while (data := await server_r.read(65536)) and not cut.is_set():
                client_w.write(data)
                await client_w.drain()

        try:
            await asyncio.wait(
                [asyncio.create_task(to_server()), asyncio.create_task(to_client())],
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for writer in (client_w, server_w):  # ...and its reply is never delivered
                writer.close()

    async def stop(self) -> None:
        self.server.close()
        await self.server.wait_closed()


async def test_jobs_of_a_claim_whose_reply_was_lost_still_run(db_url: str) -> None:
    """The claim commits, the connection drops before its reply: the lane finds the
    jobs it claimed (``doing`` under its own, live worker id) and runs them."""
    import procrastinate

    from jobsys.config.loader import LaneSpec
    from jobsys.engine import pool
    from jobsys.engine.worker import LaneWorker

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'q1', 'claim.t', '{}' FROM generate_series(1, 4)"
        )
    proxy = ReplyDroppingProxy(db_url)
    proxy_url = await proxy.start()
    app = procrastinate.App(connector=pool.connector(proxy_url, min_size=1, max_size=4))
    ran: list[int] = []

    @app.task(name="claim.t", queue="q1", pass_context=True)
    async def t(context: Any) -> None:
        ran.append(context.job.id)

    lane = LaneSpec("l", ("q1",), 4, 60.0)
    try:
        async with app.open_async():
            worker = LaneWorker(
                app,
                lane,
                process_id="p",
                poll_interval_seconds=0.5,
                shutdown_grace_seconds=2,
                worker_middleware=[],
            )
            proxy.armed = True
            run = asyncio.create_task(worker.run())
            try:
                for _ in range(100):
                    await asyncio.sleep(0.1)
                    if len(ran) == 4:
                        break
            finally:
                worker.stop()
                await asyncio.wait_for(run, 10)
    finally:
        await proxy.stop()
    assert proxy.dropped == 1
    assert sorted(ran) == [1, 2, 3, 4]
    with psycopg.connect(db_url) as conn:
        statuses = conn.execute(
            "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
        ).fetchall()
    assert statuses == [("succeeded", 4)]


async def test_a_lane_survives_a_lock_conflict_while_claiming(db_url: str) -> None:
    """Another session takes a later job of the same lock while the lane's claim picks
    the earlier one: the lock's unique index refuses the claim. The lane fetches again
    and runs the job once the lock is free, instead of dying."""
    import procrastinate

    from jobsys.config.loader import LaneSpec
    from jobsys.engine import pool
    from jobsys.engine.worker import LaneWorker

    with psycopg.connect(db_url, autocommit=True) as conn:
        first, later = [
            r[0]
            for r in conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, lock, args) "
                "SELECT 'q1', 'claim.t', 'account-1', '{}' FROM generate_series(1, 2) "
                "RETURNING id"
            ).fetchall()
        ]
    other = await psycopg.AsyncConnection.connect(db_url)  # holds `later` as doing
    await other.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (later,))
    app = procrastinate.App(connector=pool.connector(db_url, min_size=1, max_size=4))
    ran: list[int] = []

    @app.task(name="claim.t", queue="q1", pass_context=True)
    async def t(context: Any) -> None:
        ran.append(context.job.id)

    async with app.open_async():
        worker = LaneWorker(
            app,
            LaneSpec("l", ("q1",), 2, 60.0),
            process_id="p",
            poll_interval_seconds=0.5,
            shutdown_grace_seconds=2,
            worker_middleware=[],
        )
        run = asyncio.create_task(worker.run())
        try:
            await asyncio.sleep(1.0)  # the claim of `first` waits on the unique index
            await other.commit()  # ...and is refused: `later` holds the lock now
            await other.close()
            await asyncio.sleep(1.0)
            assert not run.done(), "the lane died on the lock conflict"
            assert ran == []
            with psycopg.connect(db_url, autocommit=True) as conn:
                conn.execute(
                    "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", (later,)
                )
            for _ in range(50):  # the poll (0.5 s) finds `first` claimable again
                await asyncio.sleep(0.1)
                if ran:
                    break
        finally:
            worker.stop()
            await asyncio.wait_for(run, 10)
    assert ran == [first]


def claim_buffers(db_url: str, waiting: int) -> int:
    """Shared buffers one claim of 10 touches with ``waiting`` jobs due (one in ten with
    a lock, ten jobs per lock), after churn and with statistics from when the table held
    only finished jobs."""
    defer = (
        "INSERT INTO procrastinate_jobs (queue_name, task_name, lock) "
        "SELECT 'q1', 't', CASE WHEN g %% 10 = 0 THEN 'lock-' || (g / 100) END "
        "FROM generate_series(1, %s) AS g"
    )
    params = {"queues": QUEUES, "worker_id": None, "limit": 10}
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(defer, (500,))
        conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded'")
        conn.execute("ANALYZE procrastinate_jobs")
        conn.execute(defer, (waiting,))
        for _ in range(20):
            for row in conn.execute(queries.CLAIM_JOBS, params).fetchall():
                conn.execute(
                    "UPDATE procrastinate_jobs SET status = 'succeeded' WHERE id = %s", row[:1]
                )
        explained = conn.execute(
            "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + queries.CLAIM_JOBS, params
        ).fetchone()
    assert explained is not None
    plan = explained[0][0]["Plan"]
    assert plan["Actual Rows"] == 10
    return int(plan["Shared Hit Blocks"]) + int(plan.get("Shared Read Blocks", 0))


def test_a_claims_cost_does_not_grow_with_the_backlog(
    db_url: str, pg_admin_url: str, template_db: str
) -> None:
    """Counted in pages, not timed: Procrastinate's lock rule walked every waiting row
    once per candidate (thousands of pages at 20,000 waiting); ours reads about as many
    pages at 20,000 waiting as at 1,000."""
    from tests.conftest import fresh_database

    shallow = claim_buffers(db_url, 1_000)
    with fresh_database(pg_admin_url, template_db) as deep_url:
        deep = claim_buffers(deep_url, 20_000)
    assert deep < 2 * shallow + 50, (shallow, deep)


def rows_read(plan: dict[str, Any], alias: str) -> int:
    """Rows the plan's scans of ``alias`` returned, over all their loops."""
    own = 0
    if plan.get("Alias") == alias and "Scan" in plan["Node Type"]:
        own = int(plan["Actual Rows"]) * int(plan["Actual Loops"])
    return own + sum(rows_read(child, alias) for child in plan.get("Plans", []))


def never_analyzed_claim_rows(db_url: str, planner: bool) -> tuple[int, float]:
    """Waiting jobs one claim of 10 reads with 20,000 due on a job table that was never
    analyzed (a new database, or ``autovacuum = off``), with or without the planner
    setting the lane sends before its claim; and the table's ``reltuples``."""
    params = {"queues": QUEUES, "worker_id": None, "limit": 10}
    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name) "
            "SELECT 'q1', 't' FROM generate_series(1, 20000)"
        )
        conn.commit()
        row = conn.execute(
            "SELECT reltuples FROM pg_class WHERE relname = 'procrastinate_jobs'"
        ).fetchone()
        assert row is not None
        if planner:
            conn.execute(queries.CLAIM_PLANNER)
        explained = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + queries.CLAIM_JOBS, params
        ).fetchone()
        conn.rollback()
    assert explained is not None
    plan = explained[0][0]["Plan"]
    assert plan["Actual Rows"] == 10
    return rows_read(plan, "jobs"), row[0]


def test_a_claim_on_a_table_never_analyzed_stops_at_its_limit(
    db_url: str, pg_admin_url: str, template_db: str
) -> None:
    """With no statistics the planner read every waiting job of the queue through a
    bitmap scan and sorted them (a claim's cost grew with the backlog: 20,000 rows for
    10 jobs); with the setting the lane's claim sends first (manager.claim_jobs) it
    walks the queue's index in order and stops after 10."""
    from tests.conftest import fresh_database

    with_setting, reltuples = never_analyzed_claim_rows(db_url, planner=True)
    assert reltuples < 0, "the job table was analyzed: this test needs one that was not"
    with fresh_database(pg_admin_url, template_db) as other_url:
        without, _ = never_analyzed_claim_rows(other_url, planner=False)
    assert with_setting <= 10, with_setting
    assert without >= 20_000, without  # what the setting prevents (the plan it avoids)


def explain_nested_plans(conn: Any, keep: Any) -> None:
    """Send every plan of the session's statements, those inside PL/pgSQL functions
    too, to ``keep`` as JSON notices (auto_explain: the only window into a function's
    plans)."""
    conn.add_notice_handler(keep)
    for setting in (
        "LOAD 'auto_explain'",
        "SET auto_explain.log_min_duration = 0",
        "SET auto_explain.log_nested_statements = on",
        "SET auto_explain.log_analyze = on",
        "SET auto_explain.log_format = json",
        "SET client_min_messages = log",
    ):
        conn.execute(setting)


def lane_claim_rows_read(db_url: str, function_setting: bool) -> int:
    """Waiting jobs the lane's claim (queries.CLAIM, migration 0026's function) reads for
    10 with 20,000 due on a job table never analyzed, seven claims in a row (the server
    keeps the function's plan); ``function_setting``: with the function's own settings
    (``enable_bitmapscan = off``, ``plan_cache_mode = force_generic_plan``), else
    without them.
    The function's query plan is read from auto_explain (nested statements), the only
    window into a PL/pgSQL function's plans."""
    params = {"queues": QUEUES, "worker_id": None, "limit": 10, "in_order": False}
    plans: list[dict[str, Any]] = []

    def keep(diag: Any) -> None:
        text = str(diag.message_primary)
        if "WITH candidate" in text:
            plans.append(json.loads(text[text.index("{") :])["Plan"])

    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name) "
            "SELECT 'q1', 't' FROM generate_series(1, 20000)"
        )
        conn.commit()
        if not function_setting:
            conn.execute("ALTER FUNCTION jobsys_claim_v1 RESET ALL")
        explain_nested_plans(conn, keep)
        for _ in range(7):
            assert len(conn.execute(queries.CLAIM, params).fetchall()) == 10
            conn.execute("UPDATE procrastinate_jobs SET status = 'todo' WHERE status = 'doing'")
        conn.rollback()
    assert len(plans) == 7
    return max(rows_read(plan, "jobs") for plan in plans)


def test_the_lanes_claim_function_stops_at_its_limit_on_a_table_never_analyzed(
    db_url: str, pg_admin_url: str, template_db: str
) -> None:
    """The function carries the planner setting the lane sent before its claim
    (CLAIM_PLANNER) and keeps a generic plan: it walks the queue's index in order and
    stops after 10, on every call; without its settings it reads every waiting job.
    (Either setting alone is enough for this table: the generic plan does not know
    the limit is small and walks in order anyway; the function keeps both.)"""
    from tests.conftest import fresh_database

    assert lane_claim_rows_read(db_url, function_setting=True) <= 10
    with fresh_database(pg_admin_url, template_db) as other_url:
        assert lane_claim_rows_read(other_url, function_setting=False) >= 20_000


def test_the_lanes_claim_settings_end_with_it(db_url: str) -> None:
    """manager.claim_jobs on an autocommit pool connection: the function's settings
    (``enable_bitmapscan``, ``plan_cache_mode``) are in force for the claim only, and
    the server sends no warning (with ``SET LOCAL`` the claim sent "SET LOCAL can only
    be used in transaction blocks" on every call)."""
    from jobsys.lanes.execution import build_engine_app

    async def run() -> tuple[list[str], tuple[str, str], int]:
        notices: list[str] = []
        app = build_engine_app(db_url, min_size=1, max_size=1)
        async with app.open_async():
            worker_id = await app.job_manager.register_worker()
            async with app.connector.pool.connection() as conn:
                conn.add_notice_handler(lambda d: notices.append(str(d.message_primary)))
                (before,) = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
            insert_jobs(db_url, [("q1", 0, None, -10)] * 3)
            rows = await manager.claim_jobs(app.connector, QUEUES, worker_id, 10)
            async with app.connector.pool.connection() as conn:
                (pid,) = await (await conn.execute("SELECT pg_backend_pid()")).fetchone()
                assert pid == before  # the pool's one connection ran the claim
                cur = await conn.execute(
                    "SELECT current_setting('enable_bitmapscan'), "
                    "current_setting('plan_cache_mode')"
                )
                after = await cur.fetchone()
        assert after is not None
        return notices, (after[0], after[1]), len(rows)

    notices, after, claimed = asyncio.run(run())
    assert claimed == 3
    assert after == ("on", "auto")
    assert notices == []


LIMITED_PARAMS: dict[str, Any] = {
    "prefixes": [],
    "limit_kinds": [],
    "limit_targets": [],
    "limit_prefixes": [],
    "limit_keys": [],
    "concurrency": [],
    "rate_count": [],
    "span": [],
    "pad": 0.0,
}


def rows_read_after_an_empty_first_claim(db_url: str, statement: str, marker: str) -> int:
    """Waiting jobs a claim function reads for 10 with 20,000 due, when its session's
    first claim (which makes the plan the session keeps) came on an empty, analyzed
    job table: jobs deleted when done, a retention purge, a fresh analyzed database."""
    params = {"queues": QUEUES, "worker_id": None, "limit": 10, "in_order": False}
    params.update(LIMITED_PARAMS)
    plans: list[dict[str, Any]] = []

    def keep(diag: Any) -> None:
        text = str(diag.message_primary)
        if marker in text and "{" in text:
            plans.append(json.loads(text[text.index("{") :])["Plan"])

    with psycopg.connect(db_url) as conn:
        conn.execute("ANALYZE procrastinate_jobs")
        conn.commit()
        assert [r for r in conn.execute(statement, params).fetchall() if r[0] is not None] == []
        conn.commit()
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name) "
            "SELECT 'q1', 't' FROM generate_series(1, 20000)"
        )
        conn.commit()
        explain_nested_plans(conn, keep)
        for _ in range(3):
            taken = [r for r in conn.execute(statement, params).fetchall() if r[0] is not None]
            assert len(taken) == 10
            conn.execute("UPDATE procrastinate_jobs SET status = 'todo' WHERE status = 'doing'")
        conn.rollback()
    assert plans, "auto_explain showed no plan of the claim"
    return max(rows_read(plan, "jobs") for plan in plans)


@pytest.mark.parametrize(
    ("statement", "marker"),
    [(queries.CLAIM, "WITH candidate"), (queries.CLAIM_LIMITED, "procrastinate_jobs")],
    ids=["jobsys_claim_v1", "jobsys_claim_limited_v1"],
)
def test_a_plan_made_on_an_empty_analyzed_table_still_walks_the_index(
    db_url: str, statement: str, marker: str
) -> None:
    """Migration 0027 (found in review): the plan a session keeps was made at its first
    claim; on an empty, analyzed table that was a sequential scan, and every later
    claim of 10 read the whole backlog (20,000 rows)."""
    assert rows_read_after_an_empty_first_claim(db_url, statement, marker) <= 10
