"""One chunk of retry decisions, in one short transaction: the core every path uses.

Lock the failures, their pipelines and their jobs; gather :class:`RetryFacts`; ask
the rules; retry the jobs that may be retried (Procrastinate's function, same
transaction); reopen retried pipeline steps; write one audit row and the new
``retry_state`` per decision; wake the workers of the queues concerned. A dry run
reads the same facts without locks and writes nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from jobsys import tasks as task_registry
from jobsys.jobs.enqueue import Retry, enqueue
from jobsys.live.publish import publish
from jobsys.pipelines import store as pipeline_store
from jobsys.retry import rules, store
from jobsys.retry.rules import AutoPolicy, Decision, Mode, RetryFacts
from jobsys.retry.state import next_state

logger = logging.getLogger(__name__)


def registered(task: str) -> bool:
    return task_registry.get(task) is not None


async def decide_chunk(
    conn: Any,
    failure_ids: Sequence[int],
    *,
    actor: str,
    batch_id: str,
    mode: Mode,
    now: datetime,
    dry_run: bool = False,
    policy: AutoPolicy | None = None,
    task_exists: Callable[[str], bool] = registered,
) -> list[Decision]:
    """Decide (and unless ``dry_run``, apply) the retry of ``failure_ids``, in one transaction."""
    if not failure_ids:
        return []
    async with conn.transaction():
        if not dry_run:
            await store.set_lock_timeout(conn)
        lock = not dry_run
        failures = await store.load_failures(conn, failure_ids, lock=lock)
        steps = await store.load_steps(
            conn, (f["step_id"] for f in failures if f["step_id"] is not None), lock=lock
        )
        job_ids = [int(f["job_id"]) for f in failures]
        jobs = await store.load_jobs(conn, job_ids, lock=lock)
        aggregates = await store.job_aggregates(conn, job_ids)

        decisions: list[tuple[dict[str, Any], Decision]] = []
        claimed_jobs: set[int] = set()
        claimed_locks: set[str] = set()
        for f in failures:
            job = jobs.get(int(f["job_id"]))
            step = steps.get(f["step_id"]) if f["step_id"] is not None else None
            agg = aggregates.get(int(f["job_id"]), {})
            pending = set(agg.get("pending_ids") or ()) - {f["id"]}
            queueing_lock = job["queueing_lock"] if job else None
            facts = RetryFacts(
                failure_id=int(f["id"]),
                job_id=int(f["job_id"]),
                kind=f["kind"],
                retryable=bool(f["retryable"]),
                # A job retried earlier in this chunk through another of its failures.
                job_status="todo"
                if f["job_id"] in claimed_jobs
                else (job["status"] if job else None),
                task_exists=task_exists(f["task"]),
                retry_state=f["retry_state"] or {},
                pipeline_status=step["pipeline_status"] if step else None,
                step_status=step["step_status"] if step else None,
                lock_conflict=bool(
                    job and (job["lock_conflict"] or queueing_lock in claimed_locks)
                ),
                sibling_retry_pending=bool(pending) or f["job_id"] in claimed_jobs,
                auto_attempts=int(agg.get("auto_attempts") or 0),
                last_failed_at=agg.get("last_failed_at") or f["occurred_at"],
                outage_open=bool(f["outage_open"]),
                newer_failure=(
                    (int(agg["latest_id"]), str(agg["latest_kind"]))
                    if agg.get("latest_id") is not None and int(agg["latest_id"]) > int(f["id"])
                    else None
                ),
                failed_again_since=(
                    agg.get("latest_final_id") is not None
                    and int(agg["latest_final_id"]) > int(f["id"])
                ),
            )
            decision = rules.decide(facts, mode=mode, now=now, policy=policy)
            if decision.retried:
                claimed_jobs.add(facts.job_id)
                if queueing_lock:
                    claimed_locks.add(queueing_lock)
            decisions.append((f, decision))
        if dry_run:
            return [d for _, d in decisions]

        await _apply(
            conn, decisions, jobs, steps, actor=actor, batch_id=batch_id, mode=mode, now=now
        )
    return [d for _, d in decisions]


async def _apply(
    conn: Any,
    decisions: list[tuple[dict[str, Any], Decision]],
    jobs: dict[int, dict[str, Any]],
    steps: dict[int, dict[str, Any]],
    *,
    actor: str,
    batch_id: str,
    mode: Mode,
    now: datetime,
) -> None:
    import psycopg

    to_retry = {d.job_id: jobs[d.job_id]["queue_name"] for _, d in decisions if d.retried}
    try:
        async with conn.transaction():  # a savepoint: a lock race must not lose the chunk
            await enqueue(conn, Retry(to_retry))
    except psycopg.errors.UniqueViolation:
        # A job with the same queueing lock was deferred since we looked: find which.
        decisions = await _retry_one_by_one(conn, decisions, jobs)
    retried = [(f, d) for f, d in decisions if d.retried]
    await pipeline_store.reopen_steps(
        conn,
        sorted(
            f["step_id"]
            for f, _ in retried
            if f["step_id"] is not None
            and steps.get(f["step_id"], {}).get("step_status") == "failed"
        ),
    )
    await store.record(
        conn,
        events=[
            {
                "failure_id": d.failure_id,
                "job_id": d.job_id,
                "decision": d.decision,
                "new_job_id": d.new_job_id,
            }
            for _, d in decisions
        ],
        states=[
            {
                "id": d.failure_id,
                "state": next_state(
                    f["retry_state"] or {}, d, actor=actor, batch_id=batch_id, mode=mode, now=now
                ),
            }
            for f, d in decisions
        ],
        actor=actor,
        batch_id=batch_id,
        now=now,
    )
    await publish(conn, "job_failures_changed", {"retry_decisions": len(decisions)})


async def _retry_one_by_one(
    conn: Any, decisions: list[tuple[dict[str, Any], Decision]], jobs: dict[int, dict[str, Any]]
) -> list[tuple[dict[str, Any], Decision]]:
    import dataclasses

    import psycopg

    out = []
    for f, d in decisions:
        if d.retried:
            try:
                async with conn.transaction():
                    await enqueue(conn, Retry({d.job_id: jobs[d.job_id]["queue_name"]}))
            except psycopg.errors.UniqueViolation:
                d = dataclasses.replace(
                    d,
                    decision=rules.CONFLICT,
                    detail="another job with the same queueing lock was queued meanwhile",
                    new_job_id=None,
                )
        out.append((f, d))
    return out
