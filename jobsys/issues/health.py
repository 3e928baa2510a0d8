"""Queue health (the seed's CheckQueueHealthJob): breaches become ``queue_health`` issues.

Signals, per queue with the thresholds of ``health.queues`` (or
``health.queue_overrides.<queue>``): ``waiting`` (ready jobs), ``oldest_wait``
(seconds the oldest ready job has waited), ``failure_rate`` (failed attempts over
finished ones in the window, once enough finished), ``stalled`` (running jobs whose
worker stopped heart-beating); per lane: ``no_worker`` (ready work, no live worker).
Each breach upserts one issue per (queue or lane, signal); an issue whose signal is
healthy again resolves itself. :func:`evaluate` is pure; :func:`check_queues` applies.

A paused queue's jobs wait because an operator said so: its ``waiting`` and
``oldest_wait`` are not breaches, and its waiting jobs do not count towards its lane's
``no_worker`` (as Oban and Sidekiq raise nothing for a paused queue). Its
``failure_rate`` and ``stalled`` are still checked (jobs that ran, or run, despite
it). A ``waiting``, ``oldest_wait`` or ``no_worker`` issue open when the queue is
paused resolves itself (``auto``) like any healthy signal: the pause is the
operator's acknowledgement (``resolved_reason = "queue paused"``), so when it breaches
again once the queue is open it reopens, but not as a regression. Once the queue is
open again (resumed, or its ``--for`` pause ran out), a job's ``oldest_wait`` counts
from the later of its own ready time and the end of the pause, so a backlog that piled
up during the pause alarms only if it still waits ``max_oldest_wait_seconds`` after
the queue opened.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobsys.db.query import one_snapshot
from jobsys.failures import fingerprint as fp
from jobsys.flow import store as flow_store
from jobsys.issues import health_store
from jobsys.issues import store as issues_store
from jobsys.live.publish import publish

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.config.models import QueueThresholds

QUEUE_HEALTH = "queue_health"


@dataclass(frozen=True)
class Breach:
    fingerprint: str
    title: str
    queue: str | None
    signal: str
    value: float
    threshold: float

    @property
    def details(self) -> dict[str, Any]:
        return {"signal": self.signal, "value": self.value, "threshold": self.threshold}


def thresholds(config: Config, queue: str) -> QueueThresholds:
    health = config.queues.health
    return health.queue_overrides.get(queue, health.queues)


def evaluate(
    config: Config,
    waiting: dict[str, tuple[int, float]],
    outcomes: dict[str, tuple[int, int]],
    stalled: dict[str, int],
    live_lanes: set[str],
    paused: Collection[str] = frozenset(),
    pause_ends: Mapping[str, float] | None = None,
) -> list[Breach]:
    """Breaches from the measured state (pure): waiting (count, oldest seconds),
    outcomes (failed, finished), stalled counts per queue, the lanes with a worker,
    the paused queues (whose waiting is left out) and the seconds since the last
    pause of a queue ended (its oldest wait counts from there at most)."""
    breaches = []
    ended = pause_ends or {}
    # The queues whose oldest wait the end of a pause cut short (the title says so).
    clamped = {q for q, (_, oldest) in waiting.items() if ended.get(q, oldest) < oldest}
    waiting = {
        q: (count, min(oldest, ended.get(q, oldest)))
        for q, (count, oldest) in waiting.items()
        if q not in paused
    }
    queues = set(config.all_queues) | set(waiting) | set(outcomes) | set(stalled)
    for queue in sorted(queues):
        limits = thresholds(config, queue)
        count, oldest = waiting.get(queue, (0, 0.0))
        if count > limits.max_waiting:
            breaches.append(
                Breach(
                    fp.queue_health(queue, "waiting"),
                    f"queue {queue}: {count} jobs waiting (threshold {limits.max_waiting})",
                    queue,
                    "waiting",
                    count,
                    limits.max_waiting,
                )
            )
        if count and oldest > limits.max_oldest_wait_seconds:
            since = " since the queue's pause ended" if queue in clamped else ""
            breaches.append(
                Breach(
                    fp.queue_health(queue, "oldest_wait"),
                    f"queue {queue}: oldest job waiting {oldest:.0f}s{since} "
                    f"(threshold {limits.max_oldest_wait_seconds:.0f}s)",
                    queue,
                    "oldest_wait",
                    round(oldest, 1),
                    limits.max_oldest_wait_seconds,
                )
            )
        failed, finished = outcomes.get(queue, (0, 0))
        if finished >= limits.min_finished_for_rate and failed / finished > limits.max_failure_rate:
            breaches.append(
                Breach(
                    fp.queue_health(queue, "failure_rate"),
                    f"queue {queue}: {failed} of {finished} attempts failed "
                    f"(threshold {limits.max_failure_rate:.0%})",
                    queue,
                    "failure_rate",
                    round(failed / finished, 4),
                    limits.max_failure_rate,
                )
            )
        if stalled.get(queue):
            breaches.append(
                Breach(
                    fp.queue_health(queue, "stalled"),
                    f"queue {queue}: {stalled[queue]} running jobs have no live worker",
                    queue,
                    "stalled",
                    stalled[queue],
                    0,
                )
            )
    waiting_by_lane: dict[str, int] = defaultdict(int)
    for queue, (count, _) in waiting.items():
        lane = config.lane_of(queue)
        if lane is not None and count:
            waiting_by_lane[lane] += count
    for lane, count in sorted(waiting_by_lane.items()):
        if lane not in live_lanes:
            breaches.append(
                Breach(
                    fp.queue_health(f"lane:{lane}", "no_worker"),
                    f"lane {lane}: {count} jobs waiting and no live worker",
                    None,
                    "no_worker",
                    count,
                    0,
                )
            )
    return breaches


async def measure(
    conn: Any, config: Config
) -> tuple[Any, Any, Any, set[str], set[str], dict[str, float]]:
    """The state :func:`evaluate` judges, read as one snapshot: a queue paused or
    resumed between two reads would otherwise be in neither the paused queues nor the
    pause ends (its oldest wait not clamped: a false ``oldest_wait``)."""
    dead_after = config.queues.worker.dead_after_seconds
    async with one_snapshot(conn):
        waiting = {
            r["queue"]: (int(r["waiting"]), float(r["oldest_wait_seconds"] or 0))
            for r in await health_store.queue_waiting(conn)
        }
        outcomes: dict[str, tuple[int, int]] = {}
        windows = {thresholds(config, q).window_seconds for q in config.all_queues}
        for window in sorted(windows):
            for r in await health_store.queue_outcomes(conn, window):
                if thresholds(config, r["queue"]).window_seconds == window:
                    outcomes[r["queue"]] = (int(r["failed"]), int(r["finished"]))
        stalled = {
            r["queue"]: int(r["stalled"])
            for r in await health_store.queue_stalled(conn, dead_after)
        }
        live = await health_store.live_lanes(conn, dead_after)
        paused = await health_store.paused_queues(conn)
        ended = await flow_store.pause_ends(conn, sorted(waiting))
    return waiting, outcomes, stalled, live, paused, ended


async def apply(
    conn: Any, kind: str, prefix: str, breaches: list[Breach], **extra: Any
) -> dict[str, Any]:
    """Upsert an issue per breach and resolve the others of ``prefix``, in one
    transaction, in fingerprint order (concurrent checks cannot deadlock). Those of
    ``extra["paused"]`` (fingerprints healthy only because their queue is paused)
    resolve saying so."""
    opened, resolved = [], []
    async with conn.transaction():
        for breach in sorted(breaches, key=lambda b: b.fingerprint):
            row = await issues_store.upsert_health_issue(
                conn,
                {
                    "fingerprint": breach.fingerprint,
                    "kind": kind,
                    "title": breach.title,
                    "queue": breach.queue,
                    "service": extra.get("service_of", {}).get(breach.fingerprint),
                    "details": json.dumps(breach.details),
                },
            )
            opened.append(int(row["id"]))
        if extra.get("paused"):
            for row in await issues_store.resolve_paused(conn, kind, extra["paused"]):
                resolved.append(int(row["id"]))
        for row in await issues_store.resolve_healthy(
            conn,
            kind,
            prefix,
            [b.fingerprint for b in breaches],
            json.dumps(extra.get("resolved_details", {})),
        ):
            resolved.append(int(row["id"]))
        for issue_id in opened + resolved:
            await publish(conn, "issues_changed", {"issue_id": issue_id})
    return {"breaches": [vars(b) for b in breaches], "open": opened, "resolved": resolved}


async def check_queues(conn: Any, config: Config) -> dict[str, Any]:
    """Measure, evaluate, upsert and resolve ``queue_health`` issues; also resolve
    ``job_failure`` issues quiet for ``issues.auto_resolve_after_seconds``, and those
    whose every failure's job has since succeeded (``healed``)."""
    waiting, outcomes, stalled, live, paused, ended = await measure(conn, config)
    breaches = evaluate(config, waiting, outcomes, stalled, live, paused, ended)
    # What would breach were no queue paused, and does not: the pause explains it.
    unpaused = evaluate(config, waiting, outcomes, stalled, live, (), ended)
    breached = {b.fingerprint for b in breaches}
    acknowledged = sorted({b.fingerprint for b in unpaused} - breached)
    result = await apply(conn, QUEUE_HEALTH, "queue_health:", breaches, paused=acknowledged)
    quiet = await issues_store.resolve_quiet(conn, config.queues.issues.auto_resolve_after_seconds)
    healed = await issues_store.resolve_healed(conn)
    for issue_id in quiet + healed:
        await publish(conn, "issues_changed", {"issue_id": issue_id})
    result["quiet_resolved"] = quiet
    result["healed"] = healed
    return result
