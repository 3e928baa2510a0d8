"""The chaos scenarios' task: every run writes one row of the effect ledger
(``chaos_ledger``: job, process, start, end) on a connection of its own, straight to
the database (never through the proxy a worker may sit behind), so the ledger shows
what really ran where and when, whatever happened to the worker's own connections.

Times are the worker's wall clock (``time.time()``): the scenarios run on one host.
A run that cannot write its row at once (the database is down) retries for up to
``LEDGER_RETRY_SECONDS``: an outage must not turn into a task failure.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

import psycopg

from jobsys import task

LEDGER_DDL = """
CREATE TABLE IF NOT EXISTS chaos_ledger (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    pid int NOT NULL,
    started_at double precision NOT NULL,
    ended_at double precision
)
"""
LEDGER_RETRY_SECONDS = 120.0
#: A rerun (the job already has a ledger row) takes this long instead of ``seconds``:
#: a run cut off with its worker is finished quickly by the worker that recovers it.
RERUN_SECONDS = 0.2


async def _write(sql: str, params: tuple[Any, ...]) -> Any:
    deadline = time.monotonic() + LEDGER_RETRY_SECONDS
    while True:
        try:
            async with await psycopg.AsyncConnection.connect(
                os.environ["CHAOS_LEDGER_URL"], autocommit=True, connect_timeout=2
            ) as conn:
                cur = await conn.execute(sql, params)
                return await cur.fetchone() if cur.description else None
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


@task(queue="default", name="chaos.effect", rerun_safe=True, pass_context=True)
async def effect(context, seconds: float = 0.0) -> None:  # type: ignore[no-untyped-def]
    previous = await _write(
        "SELECT count(*) FROM chaos_ledger WHERE job_id = %s", (context.job.id,)
    )
    if previous[0] > 0:
        seconds = RERUN_SECONDS
    started = time.time()
    row = await _write(
        "INSERT INTO chaos_ledger (job_id, pid, started_at) VALUES (%s, %s, %s) RETURNING id",
        (context.job.id, os.getpid(), started),
    )
    await asyncio.sleep(seconds)
    await _write("UPDATE chaos_ledger SET ended_at = %s WHERE id = %s", (time.time(), row[0]))
