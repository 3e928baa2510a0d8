"""Tasks for the reaper tests: each run records its start and end in ``reaper_runs``
(own autocommit connection, so a ``kill -9`` leaves the start behind), to prove which
process ran a job and that no two runs of a job ever overlapped."""

from __future__ import annotations

import asyncio
import os

import psycopg

from jobsys import task

RUNS_DDL = """
CREATE TABLE IF NOT EXISTS reaper_runs (
    id bigserial PRIMARY KEY,
    job_id bigint NOT NULL,
    pid int NOT NULL,
    started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    ended_at timestamptz
)
"""


#: A rerun (the job already has a run) takes this long instead of ``seconds``: the
#: first run hangs until the test kills its worker, the recovered run finishes.
RERUN_SECONDS = 0.2


async def _run(job_id: int, seconds: float) -> None:
    url = os.environ["REAPER_TEST_DB"]
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute("SELECT count(*) FROM reaper_runs WHERE job_id = %s", (job_id,))
        previous = await cur.fetchone()
        if previous is not None and previous[0] > 0:
            seconds = RERUN_SECONDS
        cur = await conn.execute(
            "INSERT INTO reaper_runs (job_id, pid) VALUES (%s, %s) RETURNING id",
            (job_id, os.getpid()),
        )
        row = await cur.fetchone()
        assert row is not None
        await asyncio.sleep(seconds)
        await conn.execute(
            "UPDATE reaper_runs SET ended_at = clock_timestamp() WHERE id = %s", (row[0],)
        )


@task(queue="default", name="reaper_test.safe", rerun_safe=True, pass_context=True)
async def safe(context, seconds: float = 0.0, account_id: int | None = None) -> None:  # type: ignore[no-untyped-def]
    await _run(context.job.id, seconds)


@task(queue="default", name="reaper_test.unsafe", rerun_safe=False, pass_context=True)
async def unsafe(  # type: ignore[no-untyped-def]
    context, seconds: float = 0.0, account_id: int | None = None, token: str | None = None
) -> None:
    await _run(context.job.id, seconds)


@task(queue="default", name="reaper_test.slow", timeout=0.5, rerun_safe=True, pass_context=True)
async def slow(context, seconds: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    await _run(context.job.id, seconds)
