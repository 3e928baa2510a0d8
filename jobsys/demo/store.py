"""DEMO ONLY: the demo's own table of synthetic accounts, ``demo_accounts``, and the
sequence of its story ids, ``demo_story_ids``.

Not part of jobsys's schema (no migration): the demo creates them on first use. The
schedule's fan-out entries read the table (``fanout.table: demo_accounts``). The
queries go through :mod:`jobsys.db.query`, so they run on the CLI's dict-row
connections and on a worker's pool connections alike.
"""

from __future__ import annotations

from typing import Any

from jobsys.db.query import execute, fetch_all, fetch_one

CREATE_ACCOUNTS = """
CREATE TABLE IF NOT EXISTS demo_accounts (
    id bigserial PRIMARY KEY,
    username text NOT NULL,
    active boolean NOT NULL DEFAULT true,
    needs_reauth boolean NOT NULL DEFAULT false
)
"""

COUNT_ACCOUNTS = "SELECT count(*) AS n FROM demo_accounts"

# Tops the table up to %(target)s accounts; a few are inactive or need re-auth, so
# the fan-outs and the authentication failures have something to show.
SEED_ACCOUNTS = """
INSERT INTO demo_accounts (username, active, needs_reauth)
SELECT 'demo_user_' || n, n %% 17 <> 0, n %% 23 = 0
  FROM generate_series(%(start)s::bigint, %(target)s::bigint) AS n
"""

CREATE_STORY_IDS = "CREATE SEQUENCE IF NOT EXISTS demo_story_ids"

SAMPLE_ACCOUNT_IDS = "SELECT id FROM demo_accounts WHERE active ORDER BY id LIMIT %(limit)s"

RANDOM_ACCOUNT_IDS = "SELECT id FROM demo_accounts WHERE active ORDER BY random() LIMIT %(limit)s"

NEXT_STORY_IDS = "SELECT nextval('demo_story_ids') AS id FROM generate_series(1, %(n)s)"

# Serialises concurrent seeders (two `make run` at once): idempotent top-up.
SEED_LOCK = "SELECT pg_advisory_xact_lock(727100101)"


async def _ensure(conn: Any) -> None:
    """The table and the sequence exist (call inside a transaction)."""
    await execute(conn, SEED_LOCK)
    await execute(conn, CREATE_ACCOUNTS)
    await execute(conn, CREATE_STORY_IDS)


async def seed(conn: Any, accounts: int) -> dict[str, int]:
    """Create the table if needed and top it up to ``accounts`` rows; idempotent."""
    async with conn.transaction():
        await _ensure(conn)
        row = await fetch_one(conn, COUNT_ACCOUNTS)
        before = int(row["n"]) if row else 0
        if before < accounts:
            await execute(conn, SEED_ACCOUNTS, {"start": before + 1, "target": accounts})
    return {"accounts_before": before, "accounts": max(before, accounts)}


async def account_ids(conn: Any, limit: int, *, shuffled: bool = False) -> list[int]:
    """Up to ``limit`` active accounts: the first ones, or a random sample."""
    query = RANDOM_ACCOUNT_IDS if shuffled else SAMPLE_ACCOUNT_IDS
    return [int(r["id"]) for r in await fetch_all(conn, query, {"limit": limit})]


async def next_story_ids(conn: Any, n: int) -> list[int]:
    """``n`` new story ids, increasing across runs and processes (creates what is missing)."""
    async with conn.transaction():
        await _ensure(conn)
        return [int(r["id"]) for r in await fetch_all(conn, NEXT_STORY_IDS, {"n": n})]
