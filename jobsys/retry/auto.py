"""The automatic batch retry (the seed's RetryFailedBackgroundJobsJob): built-in task
``jobsys.retry_failed_jobs``, scheduled every minute (``config/schedule.yaml``).

Options (``retry.auto`` in queues.yaml): ``enabled``, ``batch_size`` (decisions per
run and per replay), ``max_attempts`` (automatic retries per job), and
``base_delay_seconds`` x 2^n capped by ``max_delay_seconds`` (the backoff).

Each run, in short transactions:

1. learns the outcome of earlier retries whose jobs finished since;
2. retries up to ``batch_size`` final transient failures whose backoff has elapsed
   (never authentication, never terminal pipelines, never while their service
   outage is still open), actor ``auto``;
3. replays the failures that joined a ``service_outage`` issue once it is resolved,
   ``batch_size`` per run (no spike), without cap or backoff; the issue records
   ``jobsys_outage_replays.replayed_at`` when done, whoever resolved it.

Events: the ``jobs_changed`` and ``job_failures_changed`` live topics when it decided
something. Logs only when it did something.
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobsys import task
from jobsys.config.models import AutoRetry
from jobsys.engine import pool

if TYPE_CHECKING:
    from jobsys.retry.rules import AutoPolicy

logger = logging.getLogger(__name__)

TASK_NAME = "jobsys.retry_failed_jobs"
AUTO_ACTOR = "auto"
#: Pending outcomes learnt per run.
RECONCILE_LIMIT = 1000


@dataclass
class AutoRetryResult:
    reconciled: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    replayed_issues: list[int] = field(default_factory=list)

    @property
    def retried(self) -> int:
        return self.counts["retried"]

    def as_dict(self) -> dict[str, Any]:
        return {
            "reconciled": self.reconciled,
            "retried": self.retried,
            "counts": dict(self.counts),
            "replayed_issues": self.replayed_issues,
        }


def policy_of(auto: AutoRetry) -> AutoPolicy:
    from jobsys.retry.rules import AutoPolicy

    return AutoPolicy(
        max_attempts=auto.max_attempts,
        base_delay_seconds=auto.base_delay_seconds,
        max_delay_seconds=auto.max_delay_seconds,
    )


async def run_once(conn: Any, auto: AutoRetry, *, now: datetime | None = None) -> AutoRetryResult:
    """One pass of the automatic retry on ``conn`` (each step its own transaction)."""
    # The retry machinery is imported when the task runs, not when the module is
    # imported: every command that checks the application's tasks imports this one.
    from jobsys.retry import engine, store

    now = now or datetime.now(UTC)
    result = AutoRetryResult()
    async with conn.transaction():
        result.reconciled = await store.reconcile_outcomes(conn, now=now, limit=RECONCILE_LIMIT)
    if not auto.enabled:
        return result
    policy = policy_of(auto)
    batch_id = f"auto-{now:%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    async with conn.transaction():
        ids = await store.auto_candidates(
            conn,
            now=now,
            recheck_before=now - timedelta(seconds=auto.base_delay_seconds),
            limit=auto.batch_size,
        )
    decisions = await engine.decide_chunk(
        conn, ids, actor=AUTO_ACTOR, batch_id=batch_id, mode="auto", now=now, policy=policy
    )
    result.counts.update(d.decision for d in decisions)

    budget = auto.batch_size
    async with conn.transaction():
        outages = await store.resolved_outages(conn)
    for issue_id in outages:
        if budget <= 0:
            break
        async with conn.transaction():
            cursor = await store.replay_cursor(conn, issue_id)
            ids = await store.replay_candidates(conn, issue_id, after=cursor, limit=budget)
        decisions = await engine.decide_chunk(
            conn,
            ids,
            actor=AUTO_ACTOR,
            batch_id=f"replay-{issue_id}-{batch_id}",
            mode="replay",
            now=now,
        )
        result.counts.update(d.decision for d in decisions)
        retried = sum(1 for d in decisions if d.retried)
        done = len(ids) < budget
        async with conn.transaction():
            await store.save_replay_progress(
                conn, issue_id, cursor=None if done else ids[-1], retried=retried, now=now
            )
        if done:
            result.replayed_issues.append(issue_id)
        budget -= len(ids)
    if result.counts or result.reconciled:
        logger.info(
            "automatic retry: %s",
            ", ".join(f"{n} {reason.replace('_', ' ')}" for reason, n in result.counts.items())
            or f"{result.reconciled} outcomes recorded",
            extra={"action": "auto_retry", **result.as_dict()},
        )
    return result


@task(queue="maintenance", name=TASK_NAME, rerun_safe=True, pass_context=True)
async def retry_failed_jobs(context: Any) -> dict[str, Any]:
    """Retry failed jobs automatically (backoff, cap) and replay resolved outages."""
    from jobsys.config.application import config_for

    auto = config_for(context).queues.retry.auto
    async with pool.connection(context.app) as conn:
        result = await run_once(conn, auto)
    return result.as_dict()
