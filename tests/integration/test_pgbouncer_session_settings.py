"""jobsys's own bounds (the pool's ``statement_timeout``, the search-index pass's
``lock_timeout`` and ``statement_timeout``) stay with jobsys's connections (real
PostgreSQL, and a real transaction-mode PgBouncer with one server connection).

They were session ``SET`` statements: behind a transaction-mode PgBouncer the server
connection is shared between clients, and a session setting stays on it, so the next
client's statements ran with jobsys's 2 s lock timeout. Now they are startup
parameters (``jobsys.db.connect.connect_with_settings``): PostgreSQL applies them to
the connection's own session; PgBouncer 1.18 refuses ``options`` and jobsys connects
without them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import psycopg
from pgbouncer_support import pgbouncer

from jobsys.clock import now
from jobsys.config.application import load_config
from jobsys.engine import manager
from jobsys.jobs.search_index import SearchIndexer
from jobsys.lanes.execution import build_engine_app
from jobsys.settings import Settings

SETTINGS = ("statement_timeout", "lock_timeout")


def show(conn: Any) -> dict[str, str]:
    return {name: str(conn.execute(f"SHOW {name}").fetchone()[0]) for name in SETTINGS}


async def jobsys_work(url: str, settings: Settings) -> tuple[dict[str, str], dict[str, str]]:
    """A search-index pass on its own connection and a claim on the pool; returns what
    each of those two connections shows for ``SETTINGS``."""
    indexer = SearchIndexer(load_config(settings))
    app = build_engine_app(url, min_size=1, max_size=2)
    try:
        async with app.open_async():
            await indexer.run_pass(app, now())
            worker_id = await app.job_manager.register_worker()
            await manager.claim_jobs(app.connector, ["default"], worker_id, 1)
            own = {}
            for name in SETTINGS:
                cur = await (await indexer.connection(app)).execute(f"SHOW {name}")
                own[name] = str((await cur.fetchone())[0])
            async with app.connector.pool.connection() as conn:
                pooled = {}
                for name in SETTINGS:
                    cur = await conn.execute(f"SHOW {name}")
                    pooled[name] = str((await cur.fetchone())[0])
    finally:
        await indexer.close()
    return own, pooled


def test_direct_connections_keep_their_bounds(db_url: str, settings: Settings) -> None:
    own, pooled = asyncio.run(jobsys_work(db_url, settings))
    assert own == {"statement_timeout": "1min", "lock_timeout": "2s"}
    assert pooled == {"statement_timeout": "5min", "lock_timeout": "0"}
    with psycopg.connect(db_url, autocommit=True) as other:
        assert show(other) == {"statement_timeout": "0", "lock_timeout": "0"}


def test_transaction_pooler_hands_no_setting_to_the_next_client(
    db_url: str, settings: Settings, tmp_path: Path
) -> None:
    """One server connection behind PgBouncer: every statement of jobsys and of the
    other client runs on it. After jobsys's work the other client sees the server's
    defaults (before: 1min and 2s, the search-index pass's session SETs)."""
    with pgbouncer(db_url, tmp_path, pool_mode="transaction", pool_size=1) as bouncer_url:
        own, pooled = asyncio.run(jobsys_work(bouncer_url, settings))
        with psycopg.connect(bouncer_url, autocommit=True) as other:
            assert show(other) == {"statement_timeout": "0", "lock_timeout": "0"}
    # PgBouncer 1.18 refuses the startup options: jobsys connected without them.
    assert own == pooled == {"statement_timeout": "0", "lock_timeout": "0"}


def test_pgoptions_still_apply_beside_the_bounds(
    db_url: str, settings: Settings, monkeypatch: Any
) -> None:
    """libpq reads PGOPTIONS only when no ``options`` is given: the bounds must not
    drop an operator's own (a search_path, say) from the worker's connections."""
    monkeypatch.setenv("PGOPTIONS", "-c search_path=jobsys_elsewhere,public")
    own, pooled = asyncio.run(jobsys_work(db_url, settings))
    assert own == {"statement_timeout": "1min", "lock_timeout": "2s"}
    assert pooled == {"statement_timeout": "5min", "lock_timeout": "0"}

    async def search_path() -> str:
        app = build_engine_app(db_url, min_size=1, max_size=1)
        async with app.open_async(), app.connector.pool.connection() as conn:
            cur = await conn.execute("SHOW search_path")
            return str((await cur.fetchone())[0])

    assert asyncio.run(search_path()) == "jobsys_elsewhere,public"
