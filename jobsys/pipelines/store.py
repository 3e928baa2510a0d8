"""Pipelines in the database: starting, step transitions, cancelling, reading.

Every transition locks the pipeline row first (``FOR UPDATE``), so two parallel
steps finishing at the same moment see each other: the last one to finish
enqueues the next stage, exactly once, in the same transaction as marking itself
succeeded. Jobs are deferred (``jobsys.jobs.enqueue``) and cancelled
(``jobsys.engine.manager``) on the caller's connection, so they commit (or roll back)
with the pipeline rows.

Step statuses follow their job: ``pending`` (waiting, or not enqueued yet),
``running``, ``succeeded``, ``failed`` (final failure), ``cancelled``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from jobsys import tasks as task_registry
from jobsys.engine.queries import SHOW_STEPS
from jobsys.errors import NotFoundError, RefusedError, UsageError, not_found
from jobsys.pipelines import definitions as pipelines
from jobsys.pipelines.definitions import TERMINAL_STATUSES

INSERT_PIPELINE = """
INSERT INTO jobsys_pipelines (name, entity, status, args)
VALUES (%(name)s, %(entity)s, 'pending', %(args)s)
RETURNING id
"""

INSERT_STEP = """
INSERT INTO jobsys_pipeline_steps (pipeline_id, step, stage, task, queue, status)
VALUES (%(pipeline_id)s, %(step)s, %(stage)s, %(task)s, %(queue)s, 'pending')
RETURNING id
"""

LOCK_PIPELINE = """
SELECT id, name, entity, status, args, created_at, updated_at, finished_at, cancelled_by
FROM jobsys_pipelines WHERE id = %(id)s FOR UPDATE
"""

LOCK_PIPELINE_OF_STEP = """
SELECT p.id, p.name, p.status, p.args
FROM jobsys_pipelines p JOIN jobsys_pipeline_steps s ON s.pipeline_id = p.id
WHERE s.id = %(step_id)s
FOR UPDATE OF p
"""

STEPS_OF = """
SELECT id, step, stage, task, queue, status, job_id, attempts, updated_at, finished_at
FROM jobsys_pipeline_steps WHERE pipeline_id = %(id)s ORDER BY stage, id
"""

STEP_OF_JOB = """
SELECT id, pipeline_id FROM jobsys_pipeline_steps WHERE job_id = %(job_id)s
ORDER BY id DESC LIMIT 1
"""

SET_STEP_JOB = """
UPDATE jobsys_pipeline_steps SET job_id = %(job_id)s, status = 'pending', updated_at = now()
WHERE id = %(id)s
"""

SET_STEP_STATUS = """
UPDATE jobsys_pipeline_steps
SET status = %(status)s, updated_at = now(),
    finished_at = CASE WHEN %(status)s IN ('succeeded', 'failed', 'cancelled') THEN now() END
WHERE id = %(id)s
"""

START_STEP = """
UPDATE jobsys_pipeline_steps
SET status = CASE WHEN status = 'succeeded' THEN status ELSE 'running' END,
    attempts = attempts + 1, updated_at = now(), finished_at = NULL
WHERE id = %(id)s
"""

SET_PIPELINE_STATUS = """
UPDATE jobsys_pipelines
SET status = %(status)s, updated_at = now(),
    finished_at = CASE WHEN %(status)s IN ('succeeded', 'failed', 'cancelled') THEN now() END,
    cancelled_by = CASE WHEN %(status)s = 'cancelled' THEN %(actor)s ELSE cancelled_by END
WHERE id = %(id)s
"""

# Retrying failed steps: they wait again, and their pipeline runs again unless
# another of its steps is still failed.
REOPEN_STEPS = """
WITH reopened AS (
    UPDATE jobsys_pipeline_steps
    SET status = 'pending', finished_at = NULL, updated_at = now()
    WHERE id = ANY(%(ids)s) AND status = 'failed'
    RETURNING pipeline_id
)
UPDATE jobsys_pipelines p
SET status = CASE WHEN EXISTS (
        SELECT 1 FROM jobsys_pipeline_steps o
        WHERE o.pipeline_id = p.id AND o.status = 'failed' AND NOT o.id = ANY(%(ids)s)
    ) THEN 'failed' ELSE 'running' END,
    finished_at = NULL, updated_at = now()
WHERE p.id IN (SELECT pipeline_id FROM reopened) AND p.status = 'failed'
"""

LIST_PIPELINES = """
SELECT p.id, p.name, p.entity, p.status, p.created_at, p.updated_at, p.finished_at,
       p.cancelled_by,
       count(s.id) AS steps,
       count(s.id) FILTER (WHERE s.status = 'succeeded') AS steps_succeeded,
       count(s.id) FILTER (WHERE s.status = 'failed') AS steps_failed
FROM jobsys_pipelines p LEFT JOIN jobsys_pipeline_steps s ON s.pipeline_id = p.id
WHERE (%(status)s::text IS NULL OR p.status = %(status)s)
  AND (%(since)s::timestamptz IS NULL OR p.created_at >= %(since)s)
GROUP BY p.id
ORDER BY p.created_at DESC, p.id DESC
LIMIT %(limit)s
"""

SHOW_PIPELINE = """
SELECT id, name, entity, status, args, created_at, updated_at, finished_at, cancelled_by
FROM jobsys_pipelines WHERE id = %(id)s
"""


@dataclass(frozen=True)
class StepRef:
    step_id: int
    pipeline_id: int
    pipeline_status: str


async def _rows(conn: Any, query: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    from psycopg.rows import dict_row

    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(query, params)
        return list(await cur.fetchall()) if cur.description else []


def _queue_of(s: pipelines.Step) -> tuple[str, int]:
    spec = task_registry.get(s.task)
    if spec is None:
        raise UsageError(f"pipeline step {s.name!r}: task {s.task!r} is not registered.")
    return (s.queue or spec.queue), spec.priority


async def _defer_steps(conn: Any, steps: list[dict[str, Any]], args: dict[str, Any]) -> None:
    from jobsys.jobs.enqueue import NewJob, NewJobs, enqueue

    jobs = []
    for row in steps:
        spec = task_registry.get(row["task"])
        jobs.append(
            NewJob(
                task=row["task"],
                queue=row["queue"],
                args=dict(args),
                priority=spec.priority if spec else 0,
            )
        )
    deferred = await enqueue(conn, NewJobs(jobs))
    for row, job_id in zip(steps, deferred.ids, strict=True):
        await conn.execute(SET_STEP_JOB, {"id": row["id"], "job_id": job_id})
        row["job_id"], row["status"] = job_id, "pending"


async def start_pipeline(conn: Any, name: str, *, entity: str | None, args: dict[str, Any]) -> int:
    """Create pipeline ``name`` for ``entity`` and enqueue its first stage, in one transaction."""
    from psycopg.types.json import Jsonb

    spec = pipelines.get(name)
    if spec is None:
        known = ", ".join(sorted(pipelines.registry())) or "none"
        raise NotFoundError(f"no pipeline named {name!r} (declared: {known}).")
    queues = {s.name: _queue_of(s) for _, s in spec.steps()}
    async with conn.transaction():
        rows = await _rows(
            conn, INSERT_PIPELINE, {"name": name, "entity": entity, "args": Jsonb(args)}
        )
        pipeline_id = int(rows[0]["id"])
        first: list[dict[str, Any]] = []
        for stage, s in spec.steps():
            inserted = await _rows(
                conn,
                INSERT_STEP,
                {
                    "pipeline_id": pipeline_id,
                    "step": s.name,
                    "stage": stage,
                    "task": s.task,
                    "queue": queues[s.name][0],
                },
            )
            if stage == 0:
                first.append({"id": inserted[0]["id"], "task": s.task, "queue": queues[s.name][0]})
        await _defer_steps(conn, first, args)
    return pipeline_id


async def step_id_for_job(conn: Any, job_id: int) -> int | None:
    """The pipeline step a job runs, if any (failure capture sets ``pipeline_step_id`` from it)."""
    rows = await _rows(conn, STEP_OF_JOB, {"job_id": job_id})
    return int(rows[0]["id"]) if rows else None


async def begin_step(conn: Any, job_id: int) -> StepRef | None:
    """A step's job starts: the step runs (attempts + 1), its pipeline too."""
    found = await _rows(conn, STEP_OF_JOB, {"job_id": job_id})
    if not found:
        return None
    step_id = int(found[0]["id"])
    async with conn.transaction():
        pipe = (await _rows(conn, LOCK_PIPELINE_OF_STEP, {"step_id": step_id}))[0]
        if pipe["status"] == "cancelled":
            await conn.execute(SET_STEP_STATUS, {"id": step_id, "status": "cancelled"})
        else:
            await conn.execute(START_STEP, {"id": step_id})
            if pipe["status"] == "pending":
                await _set_pipeline(conn, pipe["id"], "running")
    return StepRef(step_id=step_id, pipeline_id=int(pipe["id"]), pipeline_status=pipe["status"])


async def _set_pipeline(conn: Any, pipeline_id: int, status: str, actor: str | None = None) -> None:
    await conn.execute(SET_PIPELINE_STATUS, {"id": pipeline_id, "status": status, "actor": actor})


async def _advance(conn: Any, pipe: dict[str, Any]) -> str:
    """Move a (locked) pipeline on after a step changed; returns its new status."""
    steps = await _rows(conn, STEPS_OF, {"id": pipe["id"]})
    open_stage = next((s["stage"] for s in steps if s["status"] != "succeeded"), None)
    if open_stage is None:
        status = "succeeded"
    else:
        stage = [s for s in steps if s["stage"] == open_stage]
        active = [s for s in stage if s["status"] in ("pending", "running") and s["job_id"]]
        broken = [s for s in stage if s["status"] in ("failed", "cancelled")]
        if broken:
            status = "failed"
        elif not active:
            await _defer_steps(conn, [s for s in stage if s["job_id"] is None], pipe["args"])
            status = "running"
        else:
            status = "running"
    if status != pipe["status"]:
        await _set_pipeline(conn, pipe["id"], status)
    return status


async def finish_step(conn: Any, step_id: int, outcome: str, *, final: bool) -> str:
    """Record a step's end; returns the pipeline's status afterwards.

    ``outcome``: ``succeeded``; ``failed`` (``final``: no automatic retry left);
    ``cancelled`` (its job was aborted). Idempotent: re-running a succeeded step
    enqueues nothing twice.
    """
    async with conn.transaction():
        pipe = (await _rows(conn, LOCK_PIPELINE_OF_STEP, {"step_id": step_id}))[0]
        if outcome == "failed" and not final:
            await conn.execute(SET_STEP_STATUS, {"id": step_id, "status": "pending"})
            return str(pipe["status"])
        await conn.execute(SET_STEP_STATUS, {"id": step_id, "status": outcome})
        if pipe["status"] == "cancelled":
            return "cancelled"
        if outcome == "succeeded":
            return await _advance(conn, pipe)
        if pipe["status"] != "failed":
            await _set_pipeline(conn, pipe["id"], "failed")
        return "failed"


async def reopen_steps(conn: Any, step_ids: list[int]) -> None:
    """Failed steps being retried: pending again; their pipelines running again."""
    if step_ids:
        await conn.execute(REOPEN_STEPS, {"ids": step_ids})


async def cancel_pipeline(conn: Any, pipeline_id: int, *, actor: str) -> dict[str, Any]:
    """Cancel a pipeline: waiting steps' jobs cancelled, running ones asked to abort.

    A failed pipeline may be cancelled (its failed steps are then never retried); a
    succeeded one is refused; cancelling a cancelled one changes nothing.
    """
    from jobsys.engine.manager import cancel_job

    async with conn.transaction():
        rows = await _rows(conn, LOCK_PIPELINE, {"id": pipeline_id})
        if not rows:
            raise not_found("pipeline", pipeline_id, listed_by="jobsys pipelines list")
        pipe = rows[0]
        if pipe["status"] == "succeeded":
            raise RefusedError(f"pipeline {pipeline_id} already succeeded: nothing to cancel.")
        if pipe["status"] == "cancelled":
            return {
                "pipeline_id": pipeline_id,
                "status": "cancelled",
                "already_cancelled": True,
                "cancelled_jobs": [],
                "abort_requested_jobs": [],
            }
        cancelled, aborting = [], []
        for s in await _rows(conn, STEPS_OF, {"id": pipeline_id}):
            if s["status"] not in ("pending", "running"):
                continue
            job_id = s["job_id"]
            if job_id is not None and await cancel_job(conn, job_id):
                cancelled.append(job_id)
            elif job_id is not None and await cancel_job(conn, job_id, abort=True):
                aborting.append(job_id)
                continue  # its step ends when the running job stops
            await conn.execute(SET_STEP_STATUS, {"id": s["id"], "status": "cancelled"})
        await _set_pipeline(conn, pipeline_id, "cancelled", actor)
    return {
        "pipeline_id": pipeline_id,
        "status": "cancelled",
        "already_cancelled": False,
        "cancelled_jobs": cancelled,
        "abort_requested_jobs": aborting,
    }


async def list_pipelines(
    conn: Any, *, status: str | None, since: datetime | None, limit: int
) -> list[dict[str, Any]]:
    return await _rows(conn, LIST_PIPELINES, {"status": status, "since": since, "limit": limit})


async def show_pipeline(conn: Any, pipeline_id: int) -> dict[str, Any]:
    rows = await _rows(conn, SHOW_PIPELINE, {"id": pipeline_id})
    if not rows:
        raise not_found("pipeline", pipeline_id, listed_by="jobsys pipelines list")
    pipe = rows[0]
    pipe["terminal"] = pipe["status"] in TERMINAL_STATUSES
    pipe["steps"] = await _rows(conn, SHOW_STEPS, {"id": pipeline_id})
    return pipe
