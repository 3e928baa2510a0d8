"""Retention: delete what is old enough, in short batches (``retention`` in queues.yaml).

- finished Procrastinate jobs and their events, per state: ``succeeded`` after
  ``succeeded_after_hours``, ``failed`` after ``failed_after_hours``, ``cancelled`` and
  ``aborted`` after ``cancelled_after_hours`` (age = the job's latest event);
- a failed job is kept while a ``jobsys_failures`` row referencing it is younger than
  ``failed_after_hours`` (the failure may still be retried);
- failure rows (and, by cascade, their ``jobsys_retry_events``) after
  ``failures_after_hours``, except while a retry of theirs is pending or their job still
  waits or runs: every failed attempt is a row with its traceback, the table that grows
  fastest in a bad night, and the one ``failures list`` reads (Sidekiq's dead set,
  GoodJob's and Oban's pruners trim theirs too). Issues keep their counts;
- schedule ticks and finished fan-out runs after ``schedule_after_hours`` (each entry's
  latest run is kept).

Each batch of ``batch_size`` rows is its own transaction with ``SKIP LOCKED``: no long
table lock, and a running worker is never blocked. Procrastinate's
``JobManager.delete_old_jobs`` does one unbounded statement over every job and event,
which is the long lock we avoid, so it is not used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from jobsys.config.models import Retention
from jobsys.schedule import retention_store, store

logger = logging.getLogger(__name__)

#: Upper bound of batches per query and run, so one run always ends (the next continues).
MAX_BATCHES_PER_RUN = 1000


@dataclass
class PurgeResult:
    deleted: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.deleted.values())


def _targets(retention: Retention, now: datetime) -> list[tuple[str, str, dict[str, Any]]]:
    def before(hours: float) -> datetime:
        return now - timedelta(hours=hours)

    return [
        (
            "succeeded_jobs",
            "jobs",
            {"statuses": ["succeeded"], "before": before(retention.succeeded_after_hours)},
        ),
        # before failed jobs: a failed job stays while a young failure references it
        ("failures", "failures", {"before": before(retention.failures_after_hours)}),
        (
            "failed_jobs",
            "jobs",
            {"statuses": ["failed"], "before": before(retention.failed_after_hours)},
        ),
        (
            "cancelled_jobs",
            "jobs",
            {
                "statuses": ["cancelled", "aborted"],
                "before": before(retention.cancelled_after_hours),
            },
        ),
        ("schedule_ticks", "ticks", {"before": before(retention.schedule_after_hours)}),
        ("fanout_runs", "fanout_runs", {"before": before(retention.schedule_after_hours)}),
    ]


async def purge(conn: Any, retention: Retention) -> PurgeResult:
    """Delete everything past its retention, batch by batch. ``conn``: no open transaction."""
    async with conn.transaction():
        now = await store.db_now(conn)
    result = PurgeResult()
    for label, what, params in _targets(retention, now):
        total = 0
        for _ in range(MAX_BATCHES_PER_RUN):
            deleted = await retention_store.delete_batch(
                conn, what, {**params, "limit": retention.batch_size}
            )
            total += deleted
            if deleted < retention.batch_size:
                break
        result.deleted[label] = total
    if result.total:
        # The text log (journalctl) says which rows too, not only the JSON log's fields.
        logger.info(
            "retention deleted %s rows (%s)",
            result.total,
            ", ".join(f"{label} {n}" for label, n in result.deleted.items() if n),
            extra={"action": "retention_purged", **result.deleted},
        )
    return result
