"""Deferring jobs: ``jobsys.defer`` and ``jobsys.defer_many`` (README, "Python API").

Everything is validated before anything is written: the task is registered, the
queue is configured, the arguments fit the task and are storable JSON
(``jobsys.jobs.validate``). With ``connection=`` (the caller's own psycopg
``AsyncConnection``) the insert joins the caller's transaction: rolled back with it,
visible (and NOTIFYing workers) only when it commits. The insert runs in a savepoint,
so a queueing-lock conflict raises :class:`AlreadyQueuedError` and leaves the
caller's transaction usable.

Without a connection: inside a worker the process's pool is used; elsewhere the
process's producer pools (``jobsys.db.producers``: one per event loop, opened on first
use and closed with the loop, bounded together, safe across fork) on the database of
the environment
(``JOBSYS_DATABASE_URL``, ``database.url`` in config, or the embedded server).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, TypedDict, Unpack

from jobsys import tasks as task_registry
from jobsys.db import producers
from jobsys.db.libpq import PQTRANS_IDLE
from jobsys.errors import (
    AlreadyQueuedError,
    ConnectionLost,
    UsageError,
    already_queued,
    did_you_mean,
    suggestion,
)
from jobsys.jobs import validate
from jobsys.jobs.enqueue import NewJob, NewJobs, UniqueKey, enqueue, waiting_with_queueing_lock
from jobsys.jobs.unique import UniqueSpec
from jobsys.tasks import PRIORITY_MAX, PRIORITY_MIN

if TYPE_CHECKING:
    from jobsys.config import Config

TaskRef = str | Callable[..., Any] | task_registry.TaskSpec


@dataclass
class _Environment:
    config: Config
    app: Any | None = None  # an open Procrastinate App (inside a worker)
    url: str | None = None
    loop: asyncio.AbstractEventLoop | None = None


_active: _Environment | None = None


def activate(config: Config, app: Any, url: str) -> None:
    """Called by the worker runtime: defers made in this process use its pool."""
    global _active
    _active = _Environment(config=config, app=app, url=url, loop=asyncio.get_running_loop())


def configure(config: Config, url: str | None = None) -> None:
    """Defers made in this process plan against ``config`` (and insert on ``url``,
    else the database of the environment). The public API (``jobsys.defer``) calls it
    with the environment's configuration on the first defer when nothing else did."""
    global _active
    _active = _Environment(config=config, url=url)


def configured() -> bool:
    return _active is not None


def deactivate() -> None:
    global _active
    _active = None


def _environment() -> _Environment:
    if _active is None:
        raise UsageError(
            "no configuration to defer with",
            hint="Defer through jobsys.defer (it loads the environment's configuration), "
            "or call jobsys.jobs.defer.configure(config) first.",
        )
    return _active


#: A validated job, ready to insert.
Planned = NewJob


class DeferManyOptions(TypedDict, total=False):
    """Where and when jobs run: the keyword options of :func:`defer_many` (and its
    ``_sync`` twin). Each may be left out or None.

    - ``queue``: a configured queue (default: the task's);
    - ``schedule_at`` (an aware datetime) or ``schedule_in`` (seconds or a timedelta):
      not before then (default: now);
    - ``lock``: jobs sharing a lock run one at a time;
    - ``priority``: higher first (default: the task's).
    """

    queue: str | None
    schedule_at: datetime | None
    schedule_in: float | timedelta | None
    lock: str | None
    priority: int | None


class DeferOptions(DeferManyOptions, total=False):
    """The keyword options of :func:`defer` (and :func:`defer_sync`): those of
    :class:`DeferManyOptions`, and ``queueing_lock``: at most one job with it waits in
    the queue (another defer raises :class:`AlreadyQueuedError`)."""

    queueing_lock: str | None


def _check_options(options: Mapping[str, object], *, many: bool) -> None:
    """Refuse a keyword the caller's function does not take, as Python would have."""
    known = (DeferManyOptions if many else DeferOptions).__optional_keys__
    for name in options:
        if name not in known:
            caller = "defer_many" if many else "defer"
            raise TypeError(f"{caller}() got an unexpected keyword argument {name!r}")


def resolve_task(task: TaskRef) -> task_registry.TaskSpec:
    if isinstance(task, task_registry.TaskSpec):
        return task
    if callable(task):
        spec = getattr(task, "jobsys_task", None)
        if isinstance(spec, task_registry.TaskSpec):
            return spec
        raise UsageError(f"{task!r} is not a jobsys task (decorate it with @jobsys.task)")
    spec = task_registry.get(task)
    if spec is None:
        hint = suggestion(task, task_registry.registry())
        raise UsageError(
            f"unknown task {task!r}",
            hint=hint or "Is its module listed in --app / JOBSYS_APP / app.modules?",
        )
    return spec


@functools.lru_cache(maxsize=1024)
def _signature(func: Callable[..., Any]) -> inspect.Signature | None:
    """A task function's signature, read once (it costs about as much as the insert's
    own Python work)."""
    try:
        return inspect.signature(func)
    except (TypeError, ValueError):
        return None


def _check_fits(spec: task_registry.TaskSpec, args: dict[str, Any], path: str) -> None:
    problem = _misfit(spec.func, spec.pass_context, tuple(args))
    if problem is not None:
        raise UsageError(f"{path}: does not fit task {spec.name}: {problem}")


@functools.lru_cache(maxsize=4096)
def _misfit(func: Callable[..., Any], pass_context: bool, names: tuple[str, ...]) -> str | None:
    """Why arguments of these names do not fit ``func`` (None: they fit). Binding
    depends on the names only, so each task's argument names are checked once."""
    signature = _signature(func)
    if signature is None:
        return None
    leading = [None] if pass_context else []
    try:
        signature.bind(*leading, **dict.fromkeys(names))
    except TypeError as exc:
        return task_registry.explain_misfit(func, pass_context, names) or str(exc)
    return None


def plan(
    config: Config,
    task: TaskRef,
    args_list: Sequence[Any],
    *,
    many: bool = False,
    unique: UniqueSpec | None = None,
    **options: Unpack[DeferOptions],
) -> list[Planned]:
    """Validate everything; return the jobs to insert (raises :class:`UsageError`).
    ``many``: the jobs of one :func:`defer_many` (which takes no ``queueing_lock``)."""
    _check_options(options, many=many)
    spec = resolve_task(task)
    target = options.get("queue") or spec.queue
    if target not in config.all_queues:
        raise UsageError(
            f"unknown queue {target!r}{did_you_mean(target, config.all_queues)}",
            hint="Queues are declared in config/queues.yaml (`jobsys queues` lists them).",
        )
    due = validate.when(options.get("schedule_at"), options.get("schedule_in"))
    priority, lock = options.get("priority"), options.get("lock")
    queueing_lock = options.get("queueing_lock")
    if priority is not None and (isinstance(priority, bool) or not isinstance(priority, int)):
        raise UsageError(f"priority: {priority!r} must be an integer")
    if priority is not None and not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        raise UsageError(
            f"priority: {priority} is out of range: a priority is from "
            f"{PRIORITY_MIN} to {PRIORITY_MAX} (a PostgreSQL integer)"
        )
    for name, value in (("lock", lock), ("queueing_lock", queueing_lock)):
        if value is not None and (not isinstance(value, str) or not value or "\x00" in value):
            raise UsageError(f"{name}: must be a non-empty string without NUL characters")
    max_bytes = config.queues.limits.max_args_bytes
    unique_spec = unique or spec.unique
    if priority is None:
        priority = spec.priority
    keys = unique_spec.keys if unique_spec is not None else None
    # Every job of the call shares all but its args (and their JSON and unique key).
    shared = Planned(
        task=spec.name,
        queue=target,
        args={},
        priority=priority,
        lock=lock,
        queueing_lock=queueing_lock,
        scheduled_at=due,
    )
    planned = []
    for index, args in enumerate(args_list):
        path = f"args[{index}]" if many else "args"
        text = validate.serialize_args(args, max_bytes=max_bytes, path=path)
        _check_fits(spec, args, path)
        if keys and any(key not in args for key in keys):
            _check_left_out_keys(spec, keys, args, path, declared=unique is None)
        key = unique_key(unique_spec, spec, args) if unique_spec else None
        planned.append(shared.with_args(args, text, key))
    return planned


def _check_left_out_keys(
    spec: task_registry.TaskSpec,
    keys: tuple[str, ...],
    args: dict[str, Any],
    path: str,
    *,
    declared: bool,
) -> None:
    """Refuse a unique key the job leaves out that is not a parameter with a default
    (that one takes the default: :func:`unique_key`)."""
    from jobsys.config.models import unique_key_problems

    defaults = _defaults(spec)
    problems = unique_key_problems(
        keys,
        {*args, *defaults},
        of="the job's arguments" + (" or the task's parameters with a default" if defaults else ""),
    )
    if not problems:
        return
    what = (
        f"Task {spec.name} declares unique_keys={keys!r}: pass each in the args"
        if declared
        else "Name arguments the job is deferred with (--unique-key ARG)"
    )
    raise UsageError(
        f"{path}: {problems[0]}",
        hint=f"{what}; a missing one would give every such job the same key, and all "
        "but the first would be dropped.",
    )


def _defaults(task: task_registry.TaskSpec | None) -> Mapping[str, Any]:
    """The task function's defaults, by parameter name (none when it is unknown)."""
    params = task.parameters if task is not None else None
    return params.defaults if params is not None else {}


def task_unique_key(task: str, args: dict[str, Any]) -> UniqueKey | None:
    """The unique key of a job of ``task`` (registered with ``unique_for``) and ``args``;
    None for any other task. For inserts that build their ``NewJob`` themselves (schedule
    ticks)."""
    spec = task_registry.get(task)
    return unique_key(spec.unique, spec, args) if spec else None


def unique_key(
    spec: UniqueSpec | None, task: str | task_registry.TaskSpec, args: dict[str, Any]
) -> UniqueKey | None:
    """What the engine needs to keep a unique job unique (``jobsys.jobs.unique``); None
    when ``spec`` is. Every insert's key is made here: a key argument the job leaves out
    is the task function's default for it (a registered task's, when ``task`` is named)."""
    if spec is None:
        return None
    of = task if isinstance(task, task_registry.TaskSpec) else task_registry.get(task)
    name = task.name if isinstance(task, task_registry.TaskSpec) else task
    key = spec.key(name, args, _defaults(of)) if spec.keys else spec.key(name, args)
    active, finished = spec.counting_states()
    return UniqueKey(key, spec.for_seconds, tuple(active), tuple(finished))


async def insert(connection: Any, planned: list[Planned]) -> list[int]:
    """Insert ``planned`` jobs on ``connection`` in one statement, inside a savepoint;
    their ids (a unique job's duplicate: the existing job's id)."""
    return [job_id for job_id, _ in await insert_with_outcome(connection, planned)]


async def insert_with_outcome(connection: Any, planned: list[Planned]) -> list[tuple[int, bool]]:
    """:func:`insert`, with for each job whether it was a duplicate of a unique job that
    counts (nothing was inserted for it; its id is the existing job's)."""
    if not planned:
        return []
    idle = connection.pgconn.transaction_status == PQTRANS_IDLE
    if not connection.autocommit and idle:
        # psycopg would run transaction() as its own BEGIN/COMMIT here, committing
        # the insert behind the caller's back: open the caller's transaction first,
        # so ours becomes a savepoint inside it.
        await connection.execute("SELECT 1")
    # On an autocommit connection outside a transaction (the producer pool's, a
    # worker's pool's) the insert is one statement that commits by itself: BEGIN and
    # COMMIT around it would only add two round trips. Unique jobs take a lock, look,
    # then insert: those need the transaction.
    own_statement = connection.autocommit and idle and not any(p.unique for p in planned)
    try:
        if own_statement:
            done = await enqueue(connection, NewJobs(planned))
        else:
            async with connection.transaction():
                done = await enqueue(connection, NewJobs(planned))
    except Exception as exc:
        from jobsys.engine.api import AlreadyEnqueued

        if not isinstance(exc, AlreadyEnqueued):
            raise
        raise await _already_queued(connection, planned) from None
    return done.outcome or [(job_id, False) for job_id in done.ids]


async def _already_queued(connection: Any, planned: list[Planned]) -> AlreadyQueuedError:
    """The refusal of a queueing-lock conflict, naming the job that waits under the lock:
    read here, on the error path only (a defer that succeeds never pays for it)."""
    lock = planned[0].queueing_lock
    assert lock is not None  # only a queueing lock conflicts
    # Jobs of several calls in one statement (the producers' combined insert) are
    # written again one by one on a conflict: only one lock's refusal reaches a caller.
    one_lock = all(p.queueing_lock == lock for p in planned)
    waiting = await waiting_with_queueing_lock(connection, lock) if one_lock else None
    return already_queued(lock, waiting)


@contextlib.asynccontextmanager
async def _connection(env: _Environment, given: Any) -> AsyncIterator[Any]:
    """The connection to insert with: the caller's, or the worker's pool's."""
    if given is not None:
        yield given
        return
    assert env.app is not None
    from jobsys.engine.app import connection

    async with connection(env.app) as conn:
        yield conn


async def _insert(env: _Environment, given: Any, planned: list[Planned]) -> list[int]:
    """Insert on the caller's connection, the worker's pool, or else the process's
    producer pool (``jobsys.db.producers``): never a connection per call."""
    if given is None and env.app is None:
        url = _producer_url(env)
        try:
            if any(p.unique for p in planned):
                return await producers.run(url, lambda conn: insert(conn, planned))
            # Calls made at the same moment (concurrent requests) share one statement.
            ids: list[int] = await producers.run_combined(url, planned, _insert_combined)
        except ConnectionLost as exc:  # one exception may be every call's of a statement
            raise ConnectionLost(exc.message, hint=lost_hint(planned)) from None
        return ids
    async with _connection(env, given) as conn:
        return await insert(conn, planned)


def lost_hint(planned: list[Planned]) -> str:
    """What to do after the connection was lost mid-defer: the jobs may be in."""
    what = "the job" if len(planned) == 1 else f"the {len(planned)} jobs"
    return (
        f"The server may have inserted {what} before the connection went: check "
        f"(`jobsys jobs list --task {planned[0].task}`) before deferring again, or defer "
        "with a queueing lock or a unique key (queueing_lock= or unique_for; "
        "--queueing-lock or --unique-for), so that deferring again cannot add a second job."
    )


async def _insert_combined(connection: Any, items: list[list[Planned]]) -> list[list[int]]:
    """The jobs of several ``defer`` calls in one statement; each call's ids."""
    ids = await insert(connection, [job for planned in items for job in planned])
    out, start = [], 0
    for planned in items:
        out.append(ids[start : start + len(planned)])
        start += len(planned)
    return out


def _producer_url(env: _Environment) -> str:
    if env.url is None:
        from jobsys.db.connect import resolve
        from jobsys.settings import from_env

        env.url = resolve(from_env(), env.config).url  # resolved once per process
    return env.url


async def defer(
    task: TaskRef,
    args: dict[str, Any] | None = None,
    *,
    connection: Any | None = None,
    **options: Unpack[DeferOptions],
) -> int:
    """Defer one job; return its id. Raises :class:`UsageError` before writing anything.
    ``options``: :class:`DeferOptions` (queue, schedule_at, schedule_in, lock,
    queueing_lock, priority)."""
    env = _environment()
    planned = plan(env.config, task, [{} if args is None else args], **options)
    return (await _insert(env, connection, planned))[0]


async def defer_many(
    task: TaskRef,
    args_list: Sequence[dict[str, Any]],
    *,
    connection: Any | None = None,
    **options: Unpack[DeferManyOptions],
) -> list[int]:
    """Defer one job per args in one statement; all or none. Returns the ids in order.
    ``options``: :class:`DeferManyOptions` (queue, schedule_at, schedule_in, lock,
    priority)."""
    env = _environment()
    planned = plan(env.config, task, list(args_list), many=True, **options)
    return await _insert(env, connection, planned)


def _run_sync(coro: Any) -> Any:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coro.close()
        raise UsageError("defer_sync called from async code: use `await jobsys.defer(...)`")
    env = _active
    if env is not None and env.loop is not None and env.loop.is_running():
        # A sync task in a worker thread: run on the worker's loop and its pool.
        return asyncio.run_coroutine_threadsafe(coro, env.loop).result()
    from jobsys.db import producers

    # Elsewhere: on the producers' own loop for sync callers (no event loop per call).
    return producers.run_sync(coro)


def defer_sync(
    task: TaskRef, args: dict[str, Any] | None = None, **options: Unpack[DeferOptions]
) -> int:
    """:func:`defer` for sync code (scripts, sync tasks). No ``connection`` here."""
    return int(_run_sync(defer(task, args, **options)))


def defer_many_sync(
    task: TaskRef, args_list: Sequence[dict[str, Any]], **options: Unpack[DeferManyOptions]
) -> list[int]:
    """:func:`defer_many` for sync code."""
    return list(_run_sync(defer_many(task, args_list, **options)))
