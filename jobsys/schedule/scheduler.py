"""The scheduler: enqueues every tick of every enabled, non-paused entry exactly once,
across any number of scheduler processes, whatever their clocks say.

Why not Procrastinate's periodic tasks: its deferrer decides which ticks are due from
each host's clock, keeps its memory of what it deferred in the process, and deletes
older ``procrastinate_periodic_defers`` rows on every defer, so a worker whose clock is
3 s behind re-defers a tick another worker already deferred (the unique row is gone),
and a clock jump forward replays every tick in the gap (300 jobs after +300 s). Its
catch-up is bounded by time (10 min), not by count, and a missed tick leaves no trace.

So jobsys runs its own loop, clocked by the database (River's periodic enqueuer shape:
:func:`tick_once` returns a small :class:`TickResult`; :class:`Scheduler` is a
:class:`jobsys.periodic.Periodic` service whose pass ticks):

- time is the database's ``clock_timestamp()``, one clock for every host; the host
  clock (``jobsys.clock``) only measures this host's skew, for a warning;
- each entry has a high-water mark in ``jobsys_schedule_entries``: the latest tick
  enqueued or recorded missed. A scheduler locks the entry's row (``FOR UPDATE SKIP
  LOCKED``: a busy row means another scheduler is on it), computes the ticks in
  ``(high_water, now]``, and in the same transaction claims each tick in
  ``jobsys_schedule_ticks`` (``ON CONFLICT DO NOTHING``), inserts its job with
  Procrastinate's defer function on the same connection, and advances the mark. A job
  exists if and only if its tick row does; a tick at or before the mark never runs again;
- after downtime (or a stale mark) at most ``defaults.catch_up`` of the newest missed
  ticks are enqueued; older ones (up to ``MAX_RECORDED_MISSED_TICKS``) are recorded
  ``missed``;
- a new entry starts from now: nothing before the first scheduler saw it is owed;
- pause/resume live in ``jobsys_schedule_entries`` and are read under the row lock at
  every tick, so every scheduler honours them at its next tick. Resuming moves the mark
  to now: ticks that fell while paused are not owed and not recorded.

The plan (:mod:`jobsys.schedule.plan`) comes from a configuration that ``load_config``
validated whole; fan-out sources are checked against the database before the first
tick (:meth:`Scheduler.check`), and a bad source stops the scheduler from starting.
:meth:`Scheduler.reload` swaps in a new plan only if it is entirely valid.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobsys import clock, cron
from jobsys.engine import pool
from jobsys.jobs.enqueue import NewJob, NewJobs, enqueue
from jobsys.periodic import Periodic
from jobsys.schedule import store
from jobsys.schedule.fanout import start_fanout
from jobsys.schedule.plan import PlannedEntry, Schedule, build

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.engine.api import App

logger = logging.getLogger(__name__)

#: The loop wakes at least this often even when no tick is due (clock drift, reload).
MAX_SLEEP_SECONDS = 5.0
#: Never spin: after a tick, wait at least this long.
MIN_SLEEP_SECONDS = 0.02
#: Wake this long after a tick is due, so the database clock has surely passed it.
WAKE_MARGIN_SECONDS = 0.01
#: Warn when the host clock is this far from the database clock.
SKEW_WARNING_SECONDS = 5.0
#: How often an entry set aside for a missing source table is looked at again.
WAITING_RECHECK_SECONDS = 60.0


@dataclass(frozen=True)
class Fired:
    """One tick handled: ``status`` is the tick's (``enqueued``, ``already_queued``,
    ``manual``, ``skipped``)."""

    entry: str
    tick_at: datetime
    status: str
    job_id: int | None = None
    run_id: int | None = None
    run_status: str | None = None
    #: The run a fan-out tick was skipped or queued behind, and whether only its item
    #: jobs (not its batches) were still going.
    blocked_by: int | None = None
    items_pending: bool = False
    #: The tick's job was a unique task's duplicate: ``job_id`` is the job already queued.
    already_queued: bool = False


@dataclass
class TickResult:
    db_now: datetime
    fired: list[Fired] = field(default_factory=list)
    missed: dict[str, int] = field(default_factory=dict)
    #: Entries another scheduler was handling (their row was locked).
    contended: list[str] = field(default_factory=list)
    next_due_at: datetime | None = None
    host_skew_seconds: float = 0.0

    @property
    def sleep_seconds(self) -> float:
        if self.next_due_at is None:
            return MAX_SLEEP_SECONDS
        wait = (self.next_due_at - self.db_now).total_seconds() + WAKE_MARGIN_SECONDS
        return min(max(wait, MIN_SLEEP_SECONDS), MAX_SLEEP_SECONDS)


def as_schedule(schedule: Schedule | Config) -> Schedule:
    return schedule if isinstance(schedule, Schedule) else build(schedule)


async def fire(conn: Any, entry: PlannedEntry, tick_at: datetime, *, status: str) -> Fired:
    """Claim ``tick_at`` for ``entry`` and enqueue its job (or start its fan-out run),
    in the caller's transaction. A tick already claimed yields ``status="duplicate"``."""
    if not await store.claim_tick(conn, entry.name, tick_at, status):
        return Fired(entry.name, tick_at, "duplicate")
    if entry.fanout is None:
        from jobsys.jobs.defer import task_unique_key

        tick_job = NewJob(
            task=entry.task,
            queue=entry.queue,
            priority=entry.priority,
            args=entry.args,
            # A task declared unique_for: a tick while its job still counts links that
            # job instead of enqueuing another.
            unique=task_unique_key(entry.task, entry.args),
        )
        done = await enqueue(conn, NewJobs([tick_job]))
        ((job_id, duplicate),) = done.outcome or [(done.ids[0], False)]
        # A manual run keeps its word (who asked); its result says already_queued.
        tick_status = "already_queued" if duplicate and status == "enqueued" else status
        await store.set_tick_job(conn, entry.name, tick_at, job_id, tick_status)
        return Fired(entry.name, tick_at, tick_status, job_id=job_id, already_queued=duplicate)
    f = entry.fanout
    started = await start_fanout(
        conn,
        entry=entry.name,
        source=f.source,
        task=f.task,
        queue=f.queue,
        batch_size=f.batch_size,
        item_arg=f.item_arg,
        args=f.args,
        priority=f.priority,
        overlap=f.overlap,
        tick_at=tick_at,
        batch_queue=f.batch_queue,
        unique=f.unique,
    )
    tick_status = "skipped" if started.status == "skipped" else status
    await store.set_tick_job(conn, entry.name, tick_at, started.batch_job_id, tick_status)
    return Fired(
        entry.name,
        tick_at,
        tick_status,
        job_id=started.batch_job_id,
        run_id=started.run_id or started.blocked_by,
        run_status=started.status,
        blocked_by=started.blocked_by,
        items_pending=started.items_pending,
    )


async def _tick_entry(
    conn: Any, entry: PlannedEntry, schedule: Schedule, result: TickResult
) -> None:
    async with conn.transaction():
        row = await store.lock_entry(conn, entry.name)
        if row is None:
            result.contended.append(entry.name)
            return
        if row["paused"]:
            return
        now = row["db_now"]
        high_water = row["high_water"] or now
        enqueue, missed, more = cron.due_ticks(
            entry.cron,
            entry.tz,
            after=high_water,
            until=now,
            catch_up=schedule.catch_up,
            max_missed=schedule.max_missed,
        )
        if not enqueue and not missed:
            return
        for tick_at in enqueue:
            result.fired.append(await fire(conn, entry, tick_at, status="enqueued"))
        await store.record_missed(conn, entry.name, missed)
        await store.advance_high_water(conn, entry.name, max([*enqueue, *missed]))
    if missed:
        result.missed[entry.name] = len(missed)
        logger.warning(
            "schedule %s: %s tick(s) missed%s (catch-up limit %s), from %s to %s",
            entry.name,
            len(missed),
            " and more not recorded" if more else "",
            schedule.catch_up,
            missed[0].isoformat(),
            missed[-1].isoformat(),
            extra={"action": "schedule_ticks_missed", "entry": entry.name, "count": len(missed)},
        )


async def tick_once(
    conn: Any, schedule: Schedule | Config, *, now: datetime | None = None
) -> TickResult:
    """Enqueue every due tick of every enabled, non-paused entry; return what happened
    and when the next tick is due. Safe to run concurrently from any number of
    processes. ``conn``: a psycopg ``AsyncConnection`` with no transaction open;
    ``now``: this host's clock (default ``jobsys.clock``), only to measure its skew
    (ticks follow the database clock)."""
    plan = as_schedule(schedule)
    active = plan.active
    names = [e.name for e in active]
    async with conn.transaction():
        states = {row["name"]: row for row in await store.read_entries(conn, names)}
        if len(states) < len(names):
            await store.ensure_entries(conn, [n for n in names if n not in states])
            states = {row["name"]: row for row in await store.read_entries(conn, names)}
        db_now = await store.db_now(conn)
    host_now = clock.now() if now is None else now
    result = TickResult(db_now=db_now, host_skew_seconds=(host_now - db_now).total_seconds())
    for entry in active:
        state = states.get(entry.name)
        if state is None or state["paused"]:
            continue
        high_water = state["high_water"] or db_now
        latest = cron.previous_fire(entry.cron, db_now.replace(microsecond=0), entry.tz)
        if latest > high_water:
            await _tick_entry(conn, entry, plan, result)
    # The next wake-up: the soonest tick after what each entry has already covered.
    nexts = []
    for entry in active:
        state = states.get(entry.name)
        if state is None or state["paused"]:
            continue
        nexts.append(entry.next_fire(max(db_now, state["high_water"] or db_now)))
    result.next_due_at = min(nexts) if nexts else None
    for fired in result.fired:
        logger.info(
            "schedule %s: tick %s %s (job %s)",
            fired.entry,
            fired.tick_at.isoformat(),
            fired.status,
            fired.job_id,
            extra={
                "action": "schedule_tick",
                "entry": fired.entry,
                "status": fired.status,
                "job_id": fired.job_id,
                "run_id": fired.run_id,
            },
        )
    return result


#: The issues of entries set aside: ``schedule_entry:<name>``.
WAITING_ISSUE_PREFIX = "schedule_entry:"


async def report_waiting(conn: Any, waiting: dict[str, str]) -> None:
    """One open ``schedule_entry`` issue per entry set aside (``jobsys issues list``);
    the others' issues are resolved (their table exists now)."""
    import json

    from jobsys.issues import store as issues_store
    from jobsys.live.publish import publish

    changed = []
    async with conn.transaction():
        for name, problem in sorted(waiting.items()):
            row = await issues_store.upsert_health_issue(
                conn,
                {
                    "fingerprint": WAITING_ISSUE_PREFIX + name,
                    "kind": "schedule_entry",
                    "title": f"schedule entry {name} is set aside: its source table is missing",
                    "queue": None,
                    "service": None,
                    "details": json.dumps({"entry": name, "problem": problem}),
                },
            )
            changed.append(int(row["id"]))
        for row in await issues_store.resolve_healthy(
            conn,
            "schedule_entry",
            WAITING_ISSUE_PREFIX,
            [WAITING_ISSUE_PREFIX + name for name in waiting],
        ):
            changed.append(int(row["id"]))
        for issue_id in changed:
            await publish(conn, "issues_changed", {"issue_id": issue_id})


class Scheduler(Periodic):
    """The scheduler as a ``jobsys worker`` service (``jobsys.app.worker_services``).

    Options: the plan built from the worker's validated configuration. A pass
    (:meth:`pass_on`) checks the fan-out sources on the first pass (and the entries set
    aside every ``WAITING_RECHECK_SECONDS``), then ticks; the next pass is due when the
    soonest tick is (at most ``MAX_SLEEP_SECONDS`` away). A failed pass stops the
    service (the worker's supervisor restarts it). Events (log ``action``):
    ``schedule_tick``, ``schedule_ticks_missed``, ``schedule_clock_skew``,
    ``schedule_reloaded``, ``schedule_reload_refused``, ``fanout_*``, ``scheduler_error``.
    """

    name = "scheduler"
    max_consecutive_errors = 1
    log = logger

    def __init__(self, schedule: Schedule | Config) -> None:
        super().__init__()
        self.schedule = as_schedule(schedule)
        #: Fan-out entries set aside because their source table does not exist (yet):
        #: entry name -> the located problem. The rest of the schedule runs.
        self.waiting: dict[str, str] = {}
        self._reported = False  # the issues of entries set aside, brought up to date
        self._skew_warned = False
        #: When the sources were last checked (None: not yet, the first pass does).
        self.checked_at: datetime | None = None

    async def check(self, conn: Any) -> None:
        """Refuse a fan-out source the database cannot serve (a bad id column or
        filter); set aside the entries whose source table does not exist yet."""
        from jobsys.errors import ConfigError
        from jobsys.schedule.sources import source_problems_of

        problems = await source_problems_of(conn, self.schedule)
        errors = [p.line for p in problems if not p.waiting_for_table]
        if errors:
            raise ConfigError(errors, hint="Fix schedule.yaml, then run `jobsys schedule check`.")
        waiting = {p.entry: p.line for p in problems if p.waiting_for_table}
        if waiting != self.waiting or not self._reported:
            await report_waiting(conn, waiting)
            self._reported = True
        self._set_waiting(waiting)

    def _set_waiting(self, waiting: dict[str, str]) -> None:
        for name in sorted(waiting.keys() - self.waiting.keys()):
            logger.error(
                f"schedule entry {name} set aside: {waiting[name]}; the rest of the schedule "
                f"runs, and the entry is taken up once its table exists (checked every "
                f"{WAITING_RECHECK_SECONDS:g} s)",
                extra={"action": "fanout_source_missing", "entry": name},
            )
        for name in sorted(self.waiting.keys() - waiting.keys()):
            logger.info(
                f"schedule entry {name}: its source table exists now; taken up",
                extra={"action": "fanout_source_restored", "entry": name},
            )
        self.waiting = waiting

    @property
    def plan(self) -> Schedule:
        """The schedule the ticks follow: every entry but those set aside."""
        if not self.waiting:
            return self.schedule
        entries = {n: e for n, e in self.schedule.entries.items() if n not in self.waiting}
        return dataclasses.replace(self.schedule, entries=entries)

    async def reload(self, conn: Any, load: Callable[[], Config]) -> bool:
        """Swap in the plan of ``load()`` only if it is entirely valid (configuration and
        fan-out sources); otherwise keep the running plan. Returns whether it swapped."""
        from jobsys.errors import ConfigError

        previous, previous_waiting = self.schedule, self.waiting
        try:
            self.schedule = build(load())
            await self.check(conn)
        except ConfigError as exc:
            self.schedule, self.waiting = previous, previous_waiting
            logger.error(
                "schedule reload refused, keeping the running schedule: %s",
                "; ".join(exc.problems),
                extra={"action": "schedule_reload_refused", "problems": exc.problems},
            )
            return False
        logger.info("schedule reloaded", extra={"action": "schedule_reloaded"})
        return True

    def interval_seconds(self) -> float:
        result = self.last_result
        wait = result.sleep_seconds if isinstance(result, TickResult) else MAX_SLEEP_SECONDS
        if self.waiting:
            wait = min(wait, WAITING_RECHECK_SECONDS)
        return wait

    async def run_pass(self, app: App, now: datetime) -> TickResult:
        async with pool.connection(app) as conn:
            return await self.pass_on(conn, now)

    async def pass_on(self, conn: Any, now: datetime) -> TickResult:
        """One pass on ``conn`` at host time ``now``: the sources checked (the first
        pass: a bad one raises ``ConfigError``; later, the entries set aside once
        ``WAITING_RECHECK_SECONDS`` have passed), then every due tick."""
        from jobsys.errors import ConfigError

        if self.checked_at is None:
            await self.check(conn)
            self.checked_at = now
        elif self.waiting and (now - self.checked_at).total_seconds() >= WAITING_RECHECK_SECONDS:
            self.checked_at = now
            try:
                await self.check(conn)
            except ConfigError as exc:  # a source broke since: keep what runs
                logger.error("; ".join(exc.problems), extra={"action": "fanout_source_broken"})
        result = await tick_once(conn, self.plan, now=now)
        self._warn_skew(result)
        return result

    def _warn_skew(self, result: TickResult) -> None:
        skewed = abs(result.host_skew_seconds) >= SKEW_WARNING_SECONDS
        if skewed and not self._skew_warned:
            logger.warning(
                "this host's clock is %.1f s off the database's; the schedule uses the "
                "database clock, but check NTP on this host",
                result.host_skew_seconds,
                extra={"action": "schedule_clock_skew", "skew_seconds": result.host_skew_seconds},
            )
        self._skew_warned = skewed


def next_run(entry: PlannedEntry, db_now: datetime, high_water: datetime | None) -> datetime:
    return entry.next_fire(max(db_now, high_water or db_now))
