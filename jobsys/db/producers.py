"""The process-wide connection pool of code that defers jobs outside a worker.

``jobsys.defer(...)`` without ``connection=`` in a web application, a script or a
management command used to open a connection per call (about 10 ms, and 50
connections at once for 50 concurrent requests). Such calls now share one pool per
process and database:

- **Opened on first use**, with ``min_size`` connections kept open, growing to
  ``max_size`` (``JOBSYS_PRODUCER_POOL_SIZE``, default :data:`DEFAULT_MAX_SIZE`) under
  concurrent use; callers beyond that wait for a free connection (up to
  :data:`WAIT_SECONDS`, then :class:`~jobsys.errors.DatabaseUnavailable`). Idle
  connections above ``min_size`` close after :data:`MAX_IDLE_SECONDS`.
- **One event loop of its own**, on a daemon thread: the pool serves every caller
  alike, async code on any event loop (each ``asyncio.run`` of a script, each worker
  thread of a WSGI server) and sync code (``defer_sync``) from any thread. An async
  caller awaits the result without blocking its loop.
- **Safe across fork**: a child process (gunicorn/uWSGI workers forked after the
  parent deferred, ``multiprocessing``) never touches the parent's connections (it
  keeps them referenced, unused, so that not even garbage collection closes a socket
  the parent still uses) and opens its own pool on its first defer.
- **Closed** at interpreter exit, or explicitly with :func:`close` (an application's
  shutdown hook, README "Python API").

Pool connections are autocommit: a defer opens its own short transaction.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobsys.errors import UsageError

T = TypeVar("T")

#: Connections at most, per process and database (``JOBSYS_PRODUCER_POOL_SIZE``).
DEFAULT_MAX_SIZE = 10
#: Connections kept open once the pool has opened.
MIN_SIZE = 1
#: A caller waits this long for a free connection before the database counts as away.
WAIT_SECONDS = 10.0
#: Connections above MIN_SIZE idle for this long are closed.
MAX_IDLE_SECONDS = 300.0
SIZE_VARIABLE = "JOBSYS_PRODUCER_POOL_SIZE"
APPLICATION_NAME = "jobsys-producer"


def max_size() -> int:
    raw = os.environ.get(SIZE_VARIABLE, "")
    if not raw:
        return DEFAULT_MAX_SIZE
    try:
        size = int(raw)
    except ValueError:
        size = 0
    if size < 1:
        raise UsageError(
            f"{SIZE_VARIABLE}={raw!r} is not a number of connections.",
            hint=f"Set it to a whole number >= 1 (default {DEFAULT_MAX_SIZE}), or unset it.",
        )
    return size


#: The most calls one combined statement carries.
COMBINE_MAX_CALLS = 500


@dataclass
class _Combiner:
    """Calls waiting to share one statement (see :func:`run_combined`)."""

    pending: list[tuple[Any, asyncio.Future[Any]]] = field(default_factory=list)
    writers: int = 0


@dataclass
class _Shared:
    """The pools of this process and the loop they live on."""

    pid: int
    loop: asyncio.AbstractEventLoop
    thread: threading.Thread
    pools: dict[str, Any] = field(default_factory=dict)
    opening: dict[str, asyncio.Lock] = field(default_factory=dict)
    combiners: dict[tuple[str, Any], _Combiner] = field(default_factory=dict)


_lock = threading.Lock()
_shared: _Shared | None = None
#: Pools inherited from a parent process: never used, never closed, never collected.
_inherited: list[_Shared] = []


def _start() -> _Shared:
    global _shared
    with _lock:
        if _shared is not None and _shared.pid == os.getpid():
            return _shared
        if _shared is not None:  # forked: the parent's pools are not ours
            _inherited.append(_shared)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="jobsys-producer-pool", daemon=True)
        thread.start()
        _shared = _Shared(pid=os.getpid(), loop=loop, thread=thread)
        return _shared


async def _pool(shared: _Shared, url: str) -> Any:
    """The open pool for ``url`` (on the pool's loop); opened on first use."""
    pool = shared.pools.get(url)
    if pool is not None:
        return pool
    async with shared.opening.setdefault(url, asyncio.Lock()):
        pool = shared.pools.get(url)
        if pool is not None:
            return pool
        import psycopg
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        from jobsys.db.connect import CONNECT_TIMEOUT_SECONDS, driver_options, translate

        async def configure(conn: Any) -> None:
            await conn.set_autocommit(True)

        pool = AsyncConnectionPool(
            url,
            min_size=MIN_SIZE,
            max_size=max(max_size(), MIN_SIZE),
            timeout=WAIT_SECONDS,
            max_idle=MAX_IDLE_SECONDS,
            kwargs={
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "row_factory": dict_row,
                **driver_options(APPLICATION_NAME),
            },
            configure=configure,
            open=False,
            name="jobsys-producer",
        )
        try:
            await pool.open(wait=True, timeout=CONNECT_TIMEOUT_SECONDS)
        except (psycopg.OperationalError, psycopg.ProgrammingError, Exception) as exc:
            await pool.close()
            raise translate(exc, url) from None
        shared.pools[url] = pool
        return pool


async def _with_connection(shared: _Shared, url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    import psycopg
    from psycopg_pool import PoolTimeout

    from jobsys.db.connect import translate

    pool = await _pool(shared, url)
    try:
        async with pool.connection() as conn:
            try:
                return await work(conn)
            except psycopg.OperationalError as exc:
                if conn.broken or conn.closed:
                    raise translate(exc, url) from None
                raise
    except PoolTimeout as exc:
        raise translate(exc, url) from None


async def run_combined(
    url: str,
    item: Any,
    work: Callable[[Any, list[Any]], Awaitable[list[Any]]],
) -> Any:
    """``work(connection, items)`` for ``item`` together with the other items submitted
    to the same ``work`` at the same moment: one statement (one round trip, one commit)
    for calls that arrive while the others are being written, from any loop or thread.
    A call alone is written at once (no delay is added). ``work`` returns one result
    per item; if it raises for a batch of several, each item is written on its own, so
    one call's error (a queueing-lock conflict) is that call's alone."""
    shared = _start()
    if on_pool_loop():
        return await _combine(shared, url, item, work)
    return await asyncio.wrap_future(_submit(_combine(shared, url, item, work)))


async def _combine(
    shared: _Shared, url: str, item: Any, work: Callable[[Any, list[Any]], Awaitable[list[Any]]]
) -> Any:
    combiner = shared.combiners.setdefault((url, work), _Combiner())
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    combiner.pending.append((item, future))
    if combiner.writers < max(max_size(), MIN_SIZE):
        # One writer per connection the pool may open: the calls that arrive while
        # every writer is busy go out together with the next statement.
        combiner.writers += 1
        asyncio.get_running_loop().create_task(_write_combined(shared, url, combiner, work))
    return await future


async def _write_combined(
    shared: _Shared,
    url: str,
    combiner: _Combiner,
    work: Callable[[Any, list[Any]], Awaitable[list[Any]]],
) -> None:
    try:
        while combiner.pending:
            batch = combiner.pending[:COMBINE_MAX_CALLS]
            del combiner.pending[:COMBINE_MAX_CALLS]
            try:
                results = await _with_connection(shared, url, _bound(work, [i for i, _ in batch]))
            except BaseException as exc:
                if len(batch) == 1 or not isinstance(exc, Exception):
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for one in batch:  # one call's error must not fail the others
                    await _write_one(shared, url, one, work)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
    finally:
        combiner.writers -= 1


def _bound(
    work: Callable[[Any, list[Any]], Awaitable[list[Any]]], items: list[Any]
) -> Callable[[Any], Awaitable[list[Any]]]:
    """``work`` for these ``items``: a function of the connection only."""

    def on(conn: Any) -> Awaitable[list[Any]]:
        return work(conn, items)

    return on


async def _write_one(
    shared: _Shared,
    url: str,
    one: tuple[Any, asyncio.Future[Any]],
    work: Callable[[Any, list[Any]], Awaitable[list[Any]]],
) -> None:
    item, future = one
    try:
        (result,) = await _with_connection(shared, url, _bound(work, [item]))
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
    else:
        if not future.done():
            future.set_result(result)


def _submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
    return asyncio.run_coroutine_threadsafe(coro, _start().loop)


def on_pool_loop() -> bool:
    """True when called from the pool's own loop (a defer already handed over)."""
    shared = _shared
    if shared is None or shared.pid != os.getpid():
        return False
    try:
        return asyncio.get_running_loop() is shared.loop
    except RuntimeError:
        return False


async def run(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Await ``work(connection)`` on a pooled connection to ``url``, from any loop."""
    shared = _start()
    if on_pool_loop():
        return await _with_connection(shared, url, work)
    return await asyncio.wrap_future(_submit(_with_connection(shared, url, work)))


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the pool's loop and wait for it (sync callers, any thread)."""
    return _submit(coro).result()


def open_connections() -> int:
    """Connections the pools of this process hold (open and in use)."""
    shared = _shared
    if shared is None or shared.pid != os.getpid():
        return 0
    return sum(pool.get_stats().get("pool_size", 0) for pool in list(shared.pools.values()))


async def _close_pools(shared: _Shared) -> None:
    pools, shared.pools = list(shared.pools.values()), {}
    for pool in pools:
        with contextlib.suppress(Exception):
            await pool.close(timeout=5.0)


def close() -> None:
    """Close this process's producer pools (the next defer opens them again)."""
    global _shared
    with _lock:
        shared, _shared = _shared, None
    if shared is None or shared.pid != os.getpid():
        if shared is not None:
            _inherited.append(shared)
        return
    if shared.loop.is_running():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close_pools(shared), shared.loop).result(10)
        shared.loop.call_soon_threadsafe(shared.loop.stop)
        shared.thread.join(5)
    if not shared.loop.is_running():
        shared.loop.close()


async def aclose() -> None:
    """:func:`close` for async code (an ASGI lifespan's shutdown)."""
    if on_pool_loop():
        raise UsageError("producers.aclose() cannot run on the producer pool's own loop")
    await asyncio.get_running_loop().run_in_executor(None, close)


atexit.register(close)
