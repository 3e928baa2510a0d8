"""Batched fan-out: one job per row of a source table, enqueued in ascending-id batches
that continue by cursor (the seed's "scheduled account batching").

A *run* (``jobsys_fanout_runs``) is started by a schedule tick or from code
(:func:`start_fanout`). Its first batch job (``jobsys.fanout_batch``) is enqueued in the
same transaction. Each batch (:func:`run_batch`) is ONE transaction:

1. lock the run row; if the job's cursor is not the run's cursor, this is a duplicate
   execution (a batch re-run after a crash that happened after its commit): do nothing;
2. read the next ``batch_size`` ids after the cursor, ascending, and insert one job per
   id in the same statement (``jobsys.jobs.enqueue`` with a ``FanoutBatch``: the ids
   never leave the server, memory is flat in the number of rows);
3. record progress (cursor, batches_done, items_enqueued);
4. enqueue the continuation with the new cursor, or mark the run finished.

A crash before the commit rolls everything back and the batch job is re-run (it is
``rerun_safe``); a crash after it makes the re-run a no-op by (1). So no item is dropped
or enqueued twice, and the continuation is neither lost nor doubled.

Batch jobs go by default to the per-item queue, behind the items they enqueued: a run
advances as fast as its lane takes its items, so a queue holds about one batch of a
run at a time (the backpressure the seed's pattern exists for). ``batch_queue`` puts
them on another queue instead (e.g. ``maintenance``): the run then enqueues as fast as
it can, and the item queue takes the whole spike.

Overlap (a new tick while the entry's previous run is not finished):

- ``skip`` (default): no run is created; the tick is recorded as ``skipped``. A run
  counts as not finished while it enqueues, and after that while one of its item jobs
  is still waiting or running (else a run of one batch would be "finished" a second
  after it started, and the next tick would enqueue every item again beside them).
- ``queue``: a run is created as ``queued`` and starts when the running one has
  enqueued its last batch. At most one run waits per entry; further ticks meanwhile
  are ``skipped``.

Two racing ticks for the same (entry, tick) create one run: ``(entry, tick_at)`` is
unique.

Unique items (``unique_for``, the entry's or else the per-item task's own option,
fixed in the run's spec at start): a batch reads its items, then inserts them as unique
jobs (``jobsys.jobs.unique``), so an item whose job still counts (say, deferred by hand
for the same account within the hour, or left waiting by the previous run) is not
enqueued again; the batch counts it as an item all the same (its cursor moves on).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from jobsys.jobs.enqueue import FanoutBatch, NewJob, NewJobs, UniqueKey, enqueue
from jobsys.jobs.unique import UniqueSpec
from jobsys.schedule import fanout_store

#: A fan-out run's statuses; ``queued``: waiting behind the entry's running run
#: (overlap: queue).
FANOUT_STATUSES = ("queued", "running", "finished", "failed", "cancelled")

logger = logging.getLogger(__name__)

BATCH_TASK = "jobsys.fanout_batch"
INTEGER_TYPES = ("smallint", "integer", "bigint")
#: The source tables the bundled demo creates (``jobsys.demo.store``) when seeded: a
#: missing one says to run the seed (a unit test keeps the two in step).
DEMO_SEEDED_TABLES = frozenset({"demo_accounts", "public.demo_accounts"})
Overlap = Literal["skip", "queue"]


@dataclass(frozen=True)
class FanoutSource:
    """Where the items come from: a table, its integer id column, an optional filter."""

    table: str
    id_column: str = "id"
    where: str | None = None

    def describe(self) -> str:
        text = f"{self.table}.{self.id_column}"
        return f"{text} WHERE {self.where}" if self.where else text


@dataclass(frozen=True)
class FanoutStart:
    """What :func:`start_fanout` did. ``status``: ``running`` (new run, first batch
    enqueued), ``queued`` (waits behind the running run), ``skipped`` (overlap: skip),
    ``existing`` (this tick already has a run: a racing scheduler created it).
    ``items_pending``: ``blocked_by`` has enqueued everything, but some of its item jobs
    are still waiting or running."""

    status: str
    run_id: int | None
    batch_job_id: int | None = None
    blocked_by: int | None = None
    items_pending: bool = False


@dataclass(frozen=True)
class BatchResult:
    run_id: int
    duplicate: bool = False
    items: int = 0
    cursor: int | None = None
    finished: bool = False
    continuation_job_id: int | None = None
    promoted_run_id: int | None = None


def quoted(table: str) -> str:
    """``table`` as text ``to_regclass`` reads exactly as ``sql.Identifier`` writes it."""
    return ".".join(f'"{part}"' for part in table.split("."))


def make_spec(
    source: FanoutSource,
    *,
    item_arg: str,
    args: dict[str, Any],
    priority: int,
    batch_queue: str | None = None,
    unique: UniqueSpec | None = None,
) -> dict[str, Any]:
    return {
        "table": source.table,
        "id_column": source.id_column,
        "where": source.where,
        "item_arg": item_arg,
        "args": dict(args),
        "priority": priority,
        "batch_queue": batch_queue,
        "unique": None
        if unique is None
        else {
            "for_seconds": unique.for_seconds,
            "keys": None if unique.keys is None else list(unique.keys),
            "states": list(unique.states),
        },
    }


def item_keys(spec: dict[str, Any], task: str) -> Callable[[dict[str, Any]], UniqueKey | None]:
    """An item's args -> its job's unique key, from the run's spec (``unique``)."""
    from jobsys.jobs.defer import unique_key

    u = spec["unique"]
    keys = None if u["keys"] is None else tuple(u["keys"])
    unique = UniqueSpec(float(u["for_seconds"]), keys, tuple(u["states"]))
    return lambda args: unique_key(unique, task, args)


async def start_fanout(
    conn: Any,
    *,
    entry: str,
    source: FanoutSource,
    task: str,
    queue: str,
    batch_size: int,
    item_arg: str = "account_id",
    args: dict[str, Any] | None = None,
    priority: int = 0,
    overlap: Overlap = "skip",
    tick_at: datetime | None = None,
    batch_queue: str | None = None,
    unique: UniqueSpec | None = None,
) -> FanoutStart:
    """Start a fan-out run of ``entry`` (in the caller's transaction, if any).

    ``tick_at`` makes the start idempotent: a second call with the same (entry,
    tick_at) returns the existing run (status ``existing``). The source is not
    validated here: call :func:`source_problems` first (the scheduler does at start).
    ``unique``: the items' jobs are unique jobs (None: if ``task`` was registered with
    ``unique_for``, by that).
    """
    from jobsys import tasks

    registered = tasks.get(task)
    spec = make_spec(
        source,
        item_arg=item_arg,
        args=args or {},
        priority=priority,
        batch_queue=batch_queue,
        unique=unique or (registered.unique if registered else None),
    )
    async with conn.transaction():
        await fanout_store.lock_fanout_entry(conn, entry)
        if tick_at is not None:
            existing = await fanout_store.run_at_tick(conn, entry, tick_at)
            if existing is not None:
                return FanoutStart("existing", int(existing["id"]))
        active = await fanout_store.active_runs(conn, entry)
        running = [r for r in active if r["status"] == "running"]
        queued = [r for r in active if r["status"] == "queued"]
        if queued or (overlap == "skip" and active):
            blocking = (running or queued or active)[0]
            blocker = int(blocking["id"])
            logger.info(
                "fan-out %s: tick skipped, run %s is not finished (overlap: %s)",
                entry,
                blocker,
                overlap,
                extra={"action": "fanout_skipped", "entry": entry, "blocked_by": blocker},
            )
            return FanoutStart(
                "skipped", None, blocked_by=blocker, items_pending=bool(blocking["items_pending"])
            )
        status = "queued" if running else "running"
        run_id = await fanout_store.insert_run(
            conn,
            {
                "entry": entry,
                "tick_at": tick_at,
                "status": status,
                "source": source.describe(),
                "task": task,
                "queue": queue,
                "batch_size": batch_size,
                "spec": spec,
            },
        )
        assert run_id is not None, "the entry lock and the tick check exclude a conflict"
        if status == "queued":
            return FanoutStart("queued", run_id, blocked_by=int(running[0]["id"]))
        job_id = await _enqueue_batch(conn, run_id, queue, spec, cursor=None)
        logger.info(
            "fan-out %s: run %s started",
            entry,
            run_id,
            extra={"action": "fanout_started", "entry": entry, "run_id": run_id},
        )
        return FanoutStart("running", run_id, batch_job_id=job_id)


async def _enqueue_batch(
    conn: Any, run_id: int, queue: str, spec: dict[str, Any], *, cursor: int | None
) -> int:
    batch_job = NewJob(
        task=BATCH_TASK,
        queue=spec.get("batch_queue") or queue,
        priority=int(spec.get("priority") or 0),
        args={"run_id": run_id, "cursor": cursor},
    )
    (job_id,) = (await enqueue(conn, NewJobs([batch_job]))).ids
    return job_id


async def run_batch(conn: Any, run_id: int, cursor: int | None) -> BatchResult:
    """Run one batch of ``run_id`` expected at ``cursor``, in one transaction."""
    async with conn.transaction():
        run = await fanout_store.lock_run(conn, run_id)
        if run is None or run["status"] != "running" or run["cursor"] != cursor:
            logger.info(
                "fan-out run %s: batch at cursor %s already done, nothing to do",
                run_id,
                cursor,
                extra={"action": "fanout_batch_duplicate", "run_id": run_id},
            )
            return BatchResult(run_id, duplicate=True)
        spec = run["spec"]
        batch = await enqueue(
            conn,
            FanoutBatch(
                table=spec["table"],
                id_column=spec["id_column"],
                where=spec.get("where"),
                cursor=cursor,
                limit=run["batch_size"],
                task=run["task"],
                queue=run["queue"],
                priority=int(spec.get("priority") or 0),
                args=spec.get("args") or {},
                item_arg=spec["item_arg"],
                unique=item_keys(spec, run["task"]) if spec.get("unique") else None,
            ),
        )
        items = batch.items
        job_ids = (batch.first_id, batch.last_id)
        new_cursor = cursor if batch.last_item is None else int(batch.last_item)
        more = (
            items == run["batch_size"]
            and new_cursor is not None
            and await fanout_store.has_more(conn, spec, new_cursor)
        )
        if more:
            await fanout_store.record_batch(
                conn, run_id, cursor=new_cursor, items=items, status="running", job_ids=job_ids
            )
            job_id = await _enqueue_batch(conn, run_id, run["queue"], spec, cursor=new_cursor)
            return BatchResult(run_id, items=items, cursor=new_cursor, continuation_job_id=job_id)
        await fanout_store.record_batch(
            conn, run_id, cursor=new_cursor, items=items, status="finished", job_ids=job_ids
        )
        promoted = await _start_next_queued(conn, run["entry"])
        logger.info(
            "fan-out run %s finished",
            run_id,
            extra={"action": "fanout_finished", "run_id": run_id, "entry": run["entry"]},
        )
        return BatchResult(
            run_id, items=items, cursor=new_cursor, finished=True, promoted_run_id=promoted
        )


async def _start_next_queued(conn: Any, entry: str) -> int | None:
    await fanout_store.lock_fanout_entry(conn, entry)
    queued = await fanout_store.next_queued(conn, entry)
    if queued is None:
        return None
    run_id = int(queued["id"])
    await fanout_store.start_queued(conn, run_id)
    await _enqueue_batch(conn, run_id, queued["queue"], queued["spec"], cursor=None)
    return run_id


def _create_hint(table: str) -> str:
    if table in DEMO_SEEDED_TABLES:
        return "the bundled demo creates it: run `jobsys demo seed`"
    return "create it, or correct fanout.table"


async def source_problems(conn: Any, source: FanoutSource) -> list[tuple[str, str]]:
    """Why ``source`` cannot be fanned out over, as (key, message) with key one of
    ``table``, ``id_column``, ``where``; empty when it can."""
    import psycopg

    if not await fanout_store.table_exists(conn, quoted(source.table)):
        return [("table", f"table {source.table!r} does not exist ({_create_hint(source.table)})")]
    kind = await fanout_store.column_type(conn, quoted(source.table), source.id_column)
    if kind is None:
        return [("id_column", f"table {source.table!r} has no column {source.id_column!r}")]
    if kind not in INTEGER_TYPES:
        return [
            (
                "id_column",
                f"column {source.table}.{source.id_column} is {kind}; "
                "the id column must be an integer type (smallint, integer, bigint)",
            )
        ]
    spec = make_spec(source, item_arg="id", args={}, priority=0)
    try:
        async with conn.transaction(force_rollback=True):
            await conn.execute(fanout_store.probe_query(spec))
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return [("where", f"{source.where!r} is not valid SQL for {source.table}: {first}")]
    return []
