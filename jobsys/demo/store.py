"""DEMO ONLY: the demo's own table of synthetic accounts, ``demo_accounts``.

Not part of jobsys's schema (no migration): the demo creates it on first use. The
schedule's fan-out entries read it (``fanout.table: demo_accounts``).
"""

from __future__ import annotations

from typing import Any

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

SAMPLE_ACCOUNT_IDS = "SELECT id FROM demo_accounts WHERE active ORDER BY id LIMIT %(limit)s"

# Serialises concurrent seeders (two `make run` at once): idempotent top-up.
SEED_LOCK = "SELECT pg_advisory_xact_lock(727100101)"


async def seed(conn: Any, accounts: int) -> dict[str, int]:
    """Create the table if needed and top it up to ``accounts`` rows; idempotent."""
    async with conn.transaction():
        await conn.execute(SEED_LOCK)
        await conn.execute(CREATE_ACCOUNTS)
        cur = await conn.execute(COUNT_ACCOUNTS)
        row = await cur.fetchone()
        before = int(row["n"])
        if before < accounts:
            await conn.execute(SEED_ACCOUNTS, {"start": before + 1, "target": accounts})
    return {"accounts_before": before, "accounts": max(before, accounts)}


async def account_ids(conn: Any, limit: int) -> list[int]:
    cur = await conn.execute(SAMPLE_ACCOUNT_IDS, {"limit": limit})
    return [int(r["id"]) for r in await cur.fetchall()]
