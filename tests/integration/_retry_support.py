"""Test support for the retry pipeline: real failed Procrastinate jobs and their failure rows.

Small scenarios run a real worker over tasks that fail on demand (``Behaviour``) and
record failure rows with ``insert_failure`` from a test middleware (failure capture
itself belongs to the failures domain). Large batches (10,000 failures) reach the
failed state through Procrastinate's own SQL functions (defer, then
``procrastinate_finish_job_v1``): the rows are exactly what a worker leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import psycopg
from psycopg.rows import dict_row

from jobsys import AuthenticationError, TransientError, task
from jobsys.failures.store import INSERT_FAILURE, FailureRow, insert_failure
from jobsys.pipelines.middleware import pipeline_middleware

TEST_QUEUE = "default"

#: What each test task does next, by key: "ok", "fail", "auth", "transient", "slow".
BEHAVIOUR: dict[str, str] = {}
RAN: list[tuple[str, str, float]] = []  # (task, key, time) in run order


async def _act(task_name: str, key: str) -> None:
    RAN.append((task_name, key, time.monotonic()))
    mode = BEHAVIOUR.get(key, "ok")
    if mode == "slow":
        await asyncio.sleep(30)
    elif mode == "fail":
        raise KeyError("edge_followed_by")
    elif mode == "auth":
        raise AuthenticationError("log in again")
    elif mode == "transient":
        raise TransientError("AI service down", service="ai")


@task(queue=TEST_QUEUE, name="t_retry.work")
async def work(key: str, account_id: int = 1) -> None:
    await _act("t_retry.work", key)


def kind_of(exc: BaseException) -> str:
    if isinstance(exc, AuthenticationError):
        return "authentication"
    if isinstance(exc, TransientError):
        return "transient"
    return "runtime"


def capture_middleware(issue_id: int | None = None) -> Callable[..., Awaitable[Any]]:
    """Record a failure row per failed attempt (stands in for the failures domain)."""

    async def middleware(call_next: Any, context: Any, worker: Any) -> Any:
        try:
            return await call_next()
        except Exception as exc:
            job = context.job
            async with worker.app.connector.pool.connection() as conn:
                kind = kind_of(exc)
                await insert_failure(
                    conn,
                    FailureRow(
                        job_id=job.id,
                        task=job.task_name,
                        queue=job.queue,
                        attempt=job.attempts + 1,
                        error_class=type(exc).__name__,
                        message=str(exc),
                        kind=kind,
                        retryable=kind != "authentication",
                        args=dict(job.task_kwargs),
                        account_id=str(job.task_kwargs.get("account_id", "")) or None,
                        lane="base",
                        issue_id=issue_id if kind == "transient" else None,
                    ),
                )
            raise

    return middleware


@contextlib.asynccontextmanager
async def procrastinate_app(url: str) -> AsyncIterator[Any]:
    from jobsys.lanes.execution import build_engine_app

    app = build_engine_app(url, max_size=4)
    async with app.open_async():
        yield app


async def drain(app: Any, queues: list[str] | None = None, *, issue_id: int | None = None) -> None:
    """Run a real worker until the queues are empty (pipeline + capture middlewares)."""
    await app.run_worker_async(
        queues=queues,
        wait=False,
        concurrency=4,
        install_signal_handlers=False,
        fetch_job_polling_interval=0.05,
        listen_notify=False,
        worker_middleware=[capture_middleware(issue_id), pipeline_middleware],
    )


async def defer(
    app: Any, key: str, *, queueing_lock: str | None = None, account_id: int = 1
) -> int:
    job = app.tasks["t_retry.work"].configure(queueing_lock=queueing_lock)
    return int(await job.defer_async(key=key, account_id=account_id))


async def failed_job(app: Any, key: str, mode: str = "fail", **kw: Any) -> tuple[int, int]:
    """A job that really failed in a worker, and its failure row id."""
    BEHAVIOUR[key] = mode
    job_id = await defer(app, key, **kw)
    await drain(app, [TEST_QUEUE])
    return job_id, await failure_of(app, job_id)


async def failure_of(app: Any, job_id: int) -> int:
    async with app.connector.pool.connection() as conn, conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(
            "SELECT id FROM jobsys_failures WHERE job_id = %s ORDER BY id DESC LIMIT 1", (job_id,)
        )
        row = await cur.fetchone()
    assert row is not None, f"no failure recorded for job {job_id}"
    return int(row["id"])


def sql(url: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        cur = conn.execute(query, params)
        return list(cur.fetchall()) if cur.description else []


def failure_params(job_id: int, *, attempt: int, kind: str, **overrides: Any) -> dict[str, Any]:
    """INSERT_FAILURE's parameters for a failure of a ``t_retry.work`` job."""
    return {
        "job_id": job_id,
        "task": "t_retry.work",
        "queue": TEST_QUEUE,
        "lane": "base",
        "attempt": attempt,
        "args": '{"key": "bulk"}',
        "error_class": "KeyError",
        "message": "edge_followed_by",
        "traceback": None,
        "account_id": str(job_id % 40),
        "profile_id": None,
        "kind": kind,
        "reason": "exception",
        "retryable": kind != "authentication",
        "will_retry": False,
        "worker": None,
        "host": None,
        "pid": None,
        "service": None,
        "fingerprint": None,
        "issue_id": None,
        "pipeline_step_id": None,
        "occurred_at": None,
        **overrides,
    }


def bulk_failed_jobs(
    url: str, count: int, *, kind: str = "runtime", issue_id: int | None = None
) -> list[int]:
    """``count`` failed jobs with one failure row each, fast; returns the failure ids."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        rows = conn.execute(
            """
            SELECT unnest(procrastinate_defer_jobs_v1(array_agg(
                ROW('default', 't_retry.work', 0, NULL, NULL,
                    jsonb_build_object('key', 'bulk-' || g), NULL)::procrastinate_job_to_defer_v1
            ))) AS id FROM generate_series(1, %s) g
            """,
            (count,),
        ).fetchall()
        job_ids = [r["id"] for r in rows]
        conn.execute(
            "UPDATE procrastinate_jobs SET status = 'doing', attempts = 0 WHERE id = ANY(%s)",
            (job_ids,),
        )
        conn.execute(
            "SELECT procrastinate_finish_job_v1(id, 'failed', false) FROM unnest(%s::bigint[]) id",
            (job_ids,),
        )
        with conn.cursor() as cur:
            cur.executemany(
                INSERT_FAILURE,
                [
                    failure_params(job_id, attempt=1, kind=kind, issue_id=issue_id)
                    for job_id in job_ids
                ],
            )
        ids = conn.execute(
            "SELECT id FROM jobsys_failures WHERE job_id = ANY(%s) ORDER BY id", (job_ids,)
        ).fetchall()
    return [r["id"] for r in ids]


def fail_again(url: str, failure_id: int, *, kind: str = "authentication") -> int:
    """The retried job of ``failure_id`` runs and fails again, in no issue: Procrastinate's
    own finish function, then a newer failure row. Returns the newer failure's id."""
    with psycopg.connect(url, autocommit=True, row_factory=dict_row) as conn:
        row = conn.execute(
            "SELECT job_id FROM jobsys_failures WHERE id = %s", (failure_id,)
        ).fetchone()
        assert row is not None
        job_id = row["job_id"]
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job_id,))
        conn.execute("SELECT procrastinate_finish_job_v1(%s, 'failed', false)", (job_id,))
        conn.execute(
            INSERT_FAILURE,
            failure_params(
                job_id,
                attempt=2,
                kind=kind,
                error_class="AuthenticationError",
                message="log in again",
            ),
        )
        newer = conn.execute(
            "SELECT max(id) AS id FROM jobsys_failures WHERE job_id = %s", (job_id,)
        ).fetchone()
    assert newer is not None
    return int(newer["id"])


def make_issue(url: str, *, kind: str = "job_failure", status: str = "open") -> int:
    rows = sql(
        url,
        "INSERT INTO jobsys_issues (fingerprint, kind, title, status) "
        "VALUES (md5(random()::text), %s, 'test issue', %s) RETURNING id",
        (kind, status),
    )
    return int(rows[0]["id"])
