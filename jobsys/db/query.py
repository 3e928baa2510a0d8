"""Running named SQL on any psycopg async connection with dict rows.

Procrastinate's pool hands out tuple-row connections, the CLI's ``connect`` dict-row
ones; store modules go through these helpers so they work on both.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

Params = Mapping[str, Any] | Sequence[Any] | None


def columns(row: Mapping[str, Any], *names: str) -> dict[str, Any]:
    """The named columns of a row, in that order: the fields a view passes on as they
    are (``{**columns(row, "id", "status"), "age": ...}``)."""
    return {name: row[name] for name in names}


def like_contains(param: str) -> str:
    """SQL for an ILIKE pattern matching any text that contains the bound parameter
    ``%(param)s`` literally (``\\``, ``%`` and ``_`` escaped). Built in SQL from the bound
    value: the planner folds it to a constant, so pg_trgm GIN indexes serve it."""
    return (
        f"('%%' || replace(replace(replace(%({param})s::text, '\\', '\\\\'), '%%', '\\%%'), "
        "'_', '\\_') || '%%')"
    )


async def fetch_all(conn: Any, sql: str, params: Params = None) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        return list(await cur.fetchall())


async def fetch_one(conn: Any, sql: str, params: Params = None) -> dict[str, Any] | None:
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(sql, params)
        row = await cur.fetchone()
        return dict(row) if row is not None else None


async def execute(conn: Any, sql: str, params: Params = None) -> int:
    """Run a statement; return the number of rows it touched."""
    async with conn.cursor() as cur:
        await cur.execute(sql, params)
        return int(cur.rowcount)


@contextlib.asynccontextmanager
async def one_round_trip(conn: Any) -> AsyncIterator[Any]:
    """Statements executed in the block are sent together and run as ONE transaction.

    On an autocommit connection (the pool's, the CLI's) they form the implicit
    transaction PostgreSQL gives a pipeline up to its Sync: one round trip, no BEGIN or
    COMMIT of their own, and an error rolls all of them back. Inside a transaction the
    caller opened, they join it. Otherwise a transaction is opened around them.
    Fetch results after the block: fetching inside would cost a round trip.
    """
    if conn.autocommit:
        async with conn.pipeline():
            yield conn
    else:
        async with conn.transaction(), conn.pipeline():
            yield conn


@contextlib.asynccontextmanager
async def one_snapshot(conn: Any) -> AsyncIterator[Any]:
    """The block's reads see the database as of one moment: a REPEATABLE READ, READ
    ONLY transaction (its ``now()`` is one time too), so a change committed between two
    of them cannot leave them disagreeing. Inside a transaction the caller opened they
    join it, with the caller's isolation (it can no longer be set)."""
    from psycopg.pq import TransactionStatus

    if conn.info.transaction_status != TransactionStatus.IDLE:
        yield conn
        return
    async with conn.transaction():
        await conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        yield conn


@contextlib.asynccontextmanager
async def autocommit(conn: Any) -> AsyncIterator[Any]:
    """``conn`` in autocommit mode for the block (pool connections are handed back as
    they came), so each ``conn.transaction()`` inside commits on its own."""
    before = conn.autocommit
    if not before:
        await conn.set_autocommit(True)
    try:
        yield conn
    finally:
        if not before and not conn.closed:
            await conn.set_autocommit(False)
