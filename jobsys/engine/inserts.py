"""The one path by which jobs become runnable: new jobs, fan-out batches, retries.

``jobsys.jobs.enqueue.enqueue`` is its only caller (an import contract says so): it
announces every insert on ``jobs_changed`` the same way, which this layer cannot do
itself (live events are a domain above it). Every source runs on the caller's
connection, inside the caller's transaction, so a job commits or rolls back with the
row that accounts for it (a tick, a run's cursor, a pipeline step, a retry decision).

- :class:`NewJobs`: one statement for any number of jobs, which may also send the
  announcement (:class:`Announce`): jobsys's ``jobsys_defer_jobs_v1`` (migration
  0025, ``queries.DEFER_UNIFORM``) when the jobs share everything but their arguments,
  else Procrastinate's own ``procrastinate_defer_jobs_v1`` (``queries.DEFER_JOBS``);
  a queueing-lock conflict raises ``procrastinate.exceptions.AlreadyEnqueued`` and
  inserts nothing.
- :class:`FanoutBatch`: ``queries.FANOUT_BATCH``, the next ids of a source table
  deferred one job each without leaving the server.
- :class:`Retry`: failed jobs back to ``todo`` (``queries.RETRY_JOBS``, Procrastinate's
  ``retry_job`` function), then their queues woken (an update sends no NOTIFY); a
  queueing-lock conflict raises ``psycopg.errors.UniqueViolation``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb

from jobsys.db.direct import DirectConnection, statement_name
from jobsys.engine import manager, queries

#: Procrastinate's unique index of one waiting job per queueing lock.
QUEUEING_LOCK_INDEX = "procrastinate_jobs_queueing_lock_idx_v1"


@dataclass(frozen=True)
class UniqueKey:
    """A unique job's key (``jobsys.jobs.unique`` computes it): a job of the same key
    counts when its status is in ``active`` (``waiting``, ``scheduled``, ``running``)
    at any age, or in ``finished`` and deferred within ``for_seconds``."""

    key: str
    for_seconds: float
    active: tuple[str, ...]
    finished: tuple[str, ...]


@dataclass(frozen=True)
class NewJob:
    task: str
    queue: str
    args: dict[str, Any]
    priority: int = 0
    lock: str | None = None
    queueing_lock: str | None = None
    scheduled_at: datetime | None = None
    unique: UniqueKey | None = None
    #: ``args`` as JSON text when the caller has serialized them already (the planner
    #: does, to check their size): sent as is, not serialized again.
    args_json: str | None = field(default=None, compare=False, repr=False)

    def with_args(
        self, args: dict[str, Any], args_json: str | None, unique: UniqueKey | None
    ) -> NewJob:
        """This job with other arguments, their JSON and unique key: the jobs of one
        ``defer_many`` share every other field. Made without the frozen dataclass's
        ``__init__`` (nine ``object.__setattr__``: 2.1 µs against 0.6 µs a job, a
        fifth of planning a small job of a ``defer_many`` of 10,000)."""
        job = object.__new__(NewJob)
        fields = job.__dict__
        fields.update(self.__dict__)
        fields["args"], fields["args_json"], fields["unique"] = args, args_json, unique
        return job


@dataclass(frozen=True)
class NewJobs:
    jobs: Sequence[NewJob]


@dataclass(frozen=True)
class FanoutBatch:
    """The next ``limit`` ids of ``table.id_column`` after ``cursor`` (None: from the
    start) matching ``where``, one job of ``task`` each, the id in ``args[item_arg]``."""

    table: str
    id_column: str
    where: str | None
    cursor: int | None
    limit: int
    task: str
    queue: str
    priority: int
    args: dict[str, Any]
    item_arg: str
    #: Items' jobs unique (``jobsys.jobs.unique``): an item's args -> its job's key. The
    #: batch then reads its items and inserts them as :class:`NewJobs` with their keys
    #: (an item whose job still counts is not deferred again); None: one statement.
    unique: Callable[[dict[str, Any]], UniqueKey | None] | None = None


@dataclass(frozen=True)
class Retry:
    """Failed jobs to run again now: job id -> its queue (to wake it)."""

    jobs: Mapping[int, str]


Source = NewJobs | FanoutBatch | Retry


@dataclass(frozen=True)
class Inserted:
    """What an insert did: ``kind`` (``deferred`` or ``retried``), how many jobs, their
    ids (a fan-out batch: none, the range is in ``first_id``/``last_id``) and, for a
    fan-out batch, its ``items`` and ``last_item``."""

    kind: str
    count: int
    ids: list[int] = field(default_factory=list)
    first_id: int | None = None
    last_id: int | None = None
    items: int = 0
    last_item: int | None = None
    #: New jobs with a unique key: per job given, (id, duplicate); a duplicate's id is
    #: the existing job's, and nothing was inserted for it.
    outcome: list[tuple[int, bool]] = field(default_factory=list)
    #: The insert statement sent the announcement itself (see :class:`Announce`).
    announced: bool = False


@dataclass(frozen=True)
class Announce:
    """A NOTIFY on ``channel`` sent by the insert statement of new jobs itself (no round
    trip of its own), delivered when the insert commits: the JSON object
    ``{"topic": topic, "deferred": <jobs inserted>, "ids": <the first ten ids>}``
    (at most about 250 bytes)."""

    channel: str
    topic: str


async def insert(conn: Any, source: Source, announce: Announce | None = None) -> Inserted:
    """Run ``source`` on ``conn``. Only ``jobsys.jobs.enqueue`` calls this. New jobs
    are announced by their insert statement itself when ``announce`` is given
    (``Inserted.announced``); the caller announces anything else."""
    if isinstance(source, NewJobs):
        return await _new_jobs(conn, source, announce)
    if isinstance(source, FanoutBatch):
        return await _fanout_batch(conn, source)
    return await _retry(conn, source)


async def _new_jobs(conn: Any, source: NewJobs, announce: Announce | None) -> Inserted:
    if any(j.unique for j in source.jobs):
        return await _unique_jobs(conn, source)
    return await _defer(conn, source.jobs, announce)


async def _unique_jobs(conn: Any, source: NewJobs) -> Inserted:
    """Under every key's transaction-level advisory lock (taken in one statement, in lock
    order, so two inserts never deadlock), the job that counts when there is one, else
    a new job and its key row, in the caller's transaction: racing defers of a key are
    serialised by the database, never check-then-insert. Duplicates inside one insert
    map to the first of them. Set-based: four statements for any number of jobs."""
    jobs = list(source.jobs)
    specs: dict[tuple[float, tuple[str, ...], tuple[str, ...]], set[str]] = {}
    for job in jobs:
        if job.unique:
            u = job.unique
            specs.setdefault((u.for_seconds, u.active, u.finished), set()).add(u.key)
    found: dict[str, int] = {}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(queries.UNIQUE_LOCKS, {"keys": sorted(set().union(*specs.values()))})
        for (for_seconds, active, finished), keys in specs.items():
            params = {
                "keys": sorted(keys),
                "active": list(active),
                "finished": list(finished),
                "for_seconds": for_seconds,
            }
            await cur.execute(queries.UNIQUE_EXISTING, params)
            for row in await cur.fetchall():
                found[row["key"]] = int(row["job_id"])
    fresh: list[int] = []
    claimed: set[str] = set()
    for index, job in enumerate(jobs):
        key = job.unique.key if job.unique else None
        if key is None or (key not in found and key not in claimed):
            fresh.append(index)
            if key is not None:
                claimed.add(key)
    done = await _defer(conn, [jobs[i] for i in fresh])
    new_ids = dict(zip(fresh, done.ids, strict=True))
    remembered = [(job_id, k.key) for i, job_id in new_ids.items() if (k := jobs[i].unique)]
    if remembered:
        await conn.execute(
            queries.UNIQUE_REMEMBER,
            {"job_ids": [j for j, _ in remembered], "keys": [k for _, k in remembered]},
        )
        for job_id, key in remembered:
            found.setdefault(key, job_id)
    outcome = []
    for index, job in enumerate(jobs):
        if index in new_ids:
            outcome.append((new_ids[index], False))
        else:
            assert job.unique is not None  # only unique jobs are ever left out
            outcome.append((found[job.unique.key], True))
    return Inserted("deferred", done.count, done.ids, done.first_id, done.last_id, outcome=outcome)


async def _defer(
    conn: Any, new_jobs: Sequence[NewJob], announce: Announce | None = None
) -> Inserted:
    """Every job in one statement, with ``announce``'s NOTIFY in the same statement: one
    round trip, and on an autocommit connection one commit (:func:`_defer_params`)."""
    if not new_jobs:
        return Inserted("deferred", 0)
    query, params = _defer_params(new_jobs)
    params["channel"] = announce.channel if announce else None
    params["topic"] = announce.topic if announce else None
    try:
        direct = _direct_params(conn, query, params)
        if direct is not None:
            # DEFER_ONE only where it runs prepared: sent as text, it is slower than
            # the function's call (a session that forgets what it prepared included).
            one = len(new_jobs) == 1 and conn.prepares()
            statement, name = _DIRECT_STATEMENTS[one]
            ids = _bigint_array(await conn.fetch_value(statement, direct, name))
        else:
            async with conn.cursor(row_factory=tuple_row) as cur:
                await cur.execute(query, params)
                row = await cur.fetchone()
            assert row is not None
            ids = [int(i) for i in row[0]]
    except Exception as exc:
        from procrastinate import exceptions

        if (
            isinstance(exc, psycopg.errors.UniqueViolation)
            and exc.diag.constraint_name == QUEUEING_LOCK_INDEX
        ):
            raise exceptions.AlreadyEnqueued(
                "Job cannot be enqueued: there is already a job in the queue with the "
                f"queueing lock {new_jobs[0].queueing_lock}"
            ) from exc
        raise
    return Inserted(
        "deferred",
        len(ids),
        ids,
        min(ids, default=None),
        max(ids, default=None),
        announced=announce is not None,
    )


#: ``queries.DEFER_UNIFORM``'s parameters in their order, and the statement with them as
#: ``$1``... for :meth:`jobsys.db.direct.DirectConnection.fetch_value`.
_DEFER_UNIFORM_NAMES = (
    "queue",
    "task",
    "priority",
    "lock",
    "queueing_lock",
    "args",
    "scheduled",
    "channel",
    "topic",
)


async def waiting_with_queueing_lock(conn: Any, lock: str) -> tuple[int, str] | None:
    """The id and task of the job waiting under queueing lock ``lock``; None when none
    waits (it started or went after a refused insert) or the look-up failed: it runs
    only to explain a queueing-lock conflict, so it never raises in its place. Inside
    the caller's transaction it runs in a savepoint, which a failure leaves usable."""
    try:
        async with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            await cur.execute(queries.WAITING_WITH_QUEUEING_LOCK, {"lock": lock})
            row = await cur.fetchone()
    except Exception:  # the refusal is the news; a failed look-up only loses the id
        return None
    return (int(row[0]), str(row[1])) if row else None


def _positional(query: str, names: Sequence[str]) -> bytes:
    for number, name in enumerate(names, 1):
        assert f"%({name})s" in query
        query = query.replace(f"%({name})s", f"${number}")
    assert "%(" not in query
    return query.encode()


_DEFER_UNIFORM_DIRECT = _positional(queries.DEFER_UNIFORM, _DEFER_UNIFORM_NAMES)
#: The direct path's statement and its name where the connection prepares statements
#: (``JOBSYS_DB_PREPARE``), by whether it prepares them and the jobs are one:
#: ``queries.DEFER_ONE`` then (the same parameters), else ``queries.DEFER_UNIFORM``.
#: Each name ends in a digest of its text (another text never shares it).
_DEFER_ONE_DIRECT = _positional(queries.DEFER_ONE, _DEFER_UNIFORM_NAMES)
_DIRECT_STATEMENTS = {
    False: (_DEFER_UNIFORM_DIRECT, statement_name("jobsys_defer_uniform", _DEFER_UNIFORM_DIRECT)),
    True: (_DEFER_ONE_DIRECT, statement_name("jobsys_defer_one", _DEFER_ONE_DIRECT)),
}


def _direct_params(conn: Any, query: str, params: dict[str, Any]) -> list[bytes | None] | None:
    """``params`` as text for the producer pool's direct path (``jobsys.db.direct``), or
    None when the statement goes through psycopg: another statement, another
    connection, or a value this conversion does not handle as psycopg would."""
    if query is not queries.DEFER_UNIFORM or not isinstance(conn, DirectConnection):
        return None
    if not conn.direct() or type(params["priority"]) is not int:
        return None
    out: list[bytes | None] = []
    for name in _DEFER_UNIFORM_NAMES:
        value = params[name]
        if value is None:
            out.append(None)
        elif isinstance(value, str) and "\x00" not in value:  # psycopg refuses NUL
            out.append(value.encode())
        elif type(value) is int:
            out.append(b"%d" % value)
        elif isinstance(value, datetime) and _whole_offset(value):
            out.append(value.isoformat().encode())  # the offset kept: the same instant
        else:
            return None
    return out


def _whole_offset(value: datetime) -> bool:
    """An aware time whose offset PostgreSQL reads back from ISO text (whole seconds)."""
    offset = value.utcoffset()
    return offset is not None and not offset.microseconds


def _bigint_array(text: bytes | None) -> list[int]:
    """A ``bigint[]`` value's text (``{1,2,3}``) as ints."""
    assert text is not None and text[:1] == b"{" and text[-1:] == b"}"
    return [int(i) for i in text[1:-1].split(b",")] if len(text) > 2 else []


#: Above this many characters of arguments, jobs go as one array element each
#: (``DEFER_JOBS``) rather than as one JSON array: a ``jsonb`` value holds at most
#: 256 MB, and its stored form can be 6 times the text (a list of one-digit numbers,
#: measured on PostgreSQL 15), so 16 Mi characters stay below it with room.
UNIFORM_MAX_ARGS_CHARS = 16 * 1024 * 1024


def _args_json(job: NewJob) -> str:
    import json

    if job.args_json is not None:
        return job.args_json
    return json.dumps(job.args, separators=(",", ":"))


def _defer_params(new_jobs: Sequence[NewJob]) -> tuple[str, dict[str, Any]]:
    """The statement for ``new_jobs`` and its parameters: jobs that share everything but
    their arguments (every ``defer`` and ``defer_many``) go to ``jobsys_defer_jobs_v1``
    (``queries.DEFER_UNIFORM``: plans cached in the server session, the columns sent
    once, the arguments as one JSON array); others to Procrastinate's
    ``procrastinate_defer_jobs_v1`` (``DEFER_JOBS``: one array per column, not one
    composite value per job, which the driver would build in Python)."""
    first = new_jobs[0]
    columns = (first.queue, first.task, first.priority, first.lock, first.queueing_lock)
    scheduled = first.scheduled_at
    texts = [_args_json(j) for j in new_jobs]
    uniform = all(
        (j.queue, j.task, j.priority, j.lock, j.queueing_lock) == columns
        and j.scheduled_at == scheduled
        for j in new_jobs
    )
    if uniform and sum(map(len, texts)) <= UNIFORM_MAX_ARGS_CHARS:
        return queries.DEFER_UNIFORM, {
            "queue": first.queue,
            "task": first.task,
            "priority": first.priority,
            "lock": first.lock,
            "queueing_lock": first.queueing_lock,
            "args": f"[{','.join(texts)}]",
            "scheduled": scheduled,
        }
    return queries.DEFER_JOBS, {
        "queues": [j.queue for j in new_jobs],
        "tasks": [j.task for j in new_jobs],
        "priorities": [j.priority for j in new_jobs],
        "locks": [j.lock for j in new_jobs],
        "queueing_locks": [j.queueing_lock for j in new_jobs],
        "args": texts,
        "scheduled": [j.scheduled_at for j in new_jobs],
    }


def fanout_batch_query(source: FanoutBatch, query: str = queries.FANOUT_BATCH) -> Any:
    """``query`` (``queries.FANOUT_BATCH`` or ``FANOUT_ITEMS``) composed for ``source``'s
    table, column and filter."""
    ident = sql.Identifier(source.id_column)
    first = source.cursor is None
    after = sql.SQL("TRUE") if first else sql.SQL("{} > %(cursor)s").format(ident)
    return sql.SQL(query).format(
        id=ident,
        table=sql.Identifier(*source.table.split(".")),
        after=after,
        where=sql.SQL(source.where or "TRUE"),
    )


async def _fanout_batch(conn: Any, source: FanoutBatch) -> Inserted:
    if source.unique is not None:
        return await _unique_fanout_batch(conn, source, source.unique)

    params = {
        "cursor": source.cursor,
        "limit": source.limit,
        "queue": source.queue,
        "task": source.task,
        "priority": source.priority,
        "item_arg": source.item_arg,
        "args": Jsonb(source.args),
    }
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(fanout_batch_query(source), params)
        row = await cur.fetchone()
    assert row is not None
    return Inserted(
        "deferred",
        int(row["deferred"]),
        first_id=row["first_job"],
        last_id=row["last_job"],
        items=int(row["items"]),
        last_item=row["last_item"],
    )


async def _unique_fanout_batch(
    conn: Any, source: FanoutBatch, key_of: Callable[[dict[str, Any]], UniqueKey | None]
) -> Inserted:
    """A batch whose items' jobs are unique: the items read, then deferred as new jobs
    with their keys (:func:`_unique_jobs`: an item whose job counts is left out)."""
    params = {"cursor": source.cursor, "limit": source.limit}
    async with conn.cursor(row_factory=dict_row) as cur:
        await cur.execute(fanout_batch_query(source, queries.FANOUT_ITEMS), params)
        items = [int(row["item"]) for row in await cur.fetchall()]
    jobs = []
    for item in items:
        args = {**source.args, source.item_arg: item}
        jobs.append(NewJob(source.task, source.queue, args, source.priority, unique=key_of(args)))
    done = await _unique_jobs(conn, NewJobs(jobs)) if jobs else Inserted("deferred", 0)
    return Inserted(
        "deferred",
        done.count,
        done.ids,
        done.first_id,
        done.last_id,
        items=len(items),
        last_item=items[-1] if items else None,
        outcome=done.outcome,
    )


async def _retry(conn: Any, source: Retry) -> Inserted:
    ids = sorted(source.jobs)
    if not ids:
        return Inserted("retried", 0)
    await conn.execute(queries.RETRY_JOBS, {"ids": ids})
    first_per_queue: dict[str, int] = {}
    for job_id in ids:
        first_per_queue.setdefault(source.jobs[job_id], job_id)
    await manager.wake_queues(conn, first_per_queue)
    return Inserted("retried", len(ids), ids, ids[0], ids[-1])
