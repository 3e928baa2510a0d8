"""The connections of code that defers jobs outside a worker.

``jobsys.defer(...)`` without ``connection=`` in a web application, a script or a
management command used to open a connection per call (about 10 ms, and 50
connections at once for 50 concurrent requests). Such calls now reuse connections:

- **A pool per event loop**: an async caller defers on connections that belong to its
  own event loop, so a call is the insert's round trip and nothing else (no hand-over
  to another thread). The pool opens on the loop's first defer and closes when the
  loop shuts down (``asyncio.run`` ends, a server's loop stops: its async generators
  are finalised, and the pool with them); a loop closed without that is swept on the
  next defer of the process. Sync code (``defer_sync``, any thread) runs on one loop of
  the process's own, on a daemon thread, with its pool.
- **Bounded per process**: all these pools together hold at most ``max_size``
  connections (``JOBSYS_PRODUCER_POOL_SIZE``, default :data:`DEFAULT_MAX_SIZE`). A
  caller beyond that waits for one (a loop with idle connections gives one up to a loop
  that waits), up to :data:`WAIT_SECONDS`, then
  :class:`~jobsys.errors.DatabaseUnavailable`. Idle connections beyond
  :data:`MIN_SIZE` per pool close after :data:`MAX_IDLE_SECONDS`.
- **Safe across fork**: a child process (gunicorn/uWSGI workers forked after the
  parent deferred, ``multiprocessing``) never touches the parent's connections (it
  keeps them referenced, unused, so that not even garbage collection closes a socket
  the parent still uses) and opens its own on its first defer.
- **Checked when taken, without a round trip**: an idle connection the server closed
  (a restart, ``pg_terminate_backend``, ``idle_session_timeout``) has its goodbye to
  read; one ``poll`` of its socket finds it and the pool takes or opens another
  (:meth:`~jobsys.db.direct.DirectConnection.server_spoke`), so no defer fails with
  :class:`~jobsys.errors.ConnectionLost` for a statement it never sent.
- **Closed** at interpreter exit, or explicitly with :func:`close` (an application's
  shutdown hook, README "Python API"). A defer already begun ends as it would have
  (``close`` waits for those of ``defer_sync``, up to :data:`CLOSE_WAIT_SECONDS`, and
  returns as soon as they are done); one begun after opens the next pool.
- **One connection per statement after the interpreter's exit handler** closed the
  pools for good: an exit handler the application registered before its first defer
  runs after jobsys's own (last registered, first run), and a daemon thread may still
  defer. Such a defer opens a connection of its own, inserts and closes it (a
  ``defer_sync`` on a loop of its own, on the calling thread): its job is written and
  nothing is left open, no pool, no thread. Concurrent defers of one loop still share
  statements (:func:`run_combined`), and at most ``max_size`` such connections are open
  at once over the whole process (:func:`_one_shot_slot`): a burst waits for a slot
  rather than exhaust the server's ``max_connections``. Host names are resolved on the
  calling thread (:func:`_resolved`): Python's thread pools refuse work at exit.

Connections are autocommit (a defer is one statement that commits by itself) and
:class:`jobsys.db.direct.DirectConnection`: the defer statement skips psycopg's cursor.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import os
import threading
import time
from collections import deque
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar

from jobsys.db.libpq import PQTRANS_IDLE
from jobsys.errors import UsageError

T = TypeVar("T")

#: Connections at most, per process and database (``JOBSYS_PRODUCER_POOL_SIZE``).
DEFAULT_MAX_SIZE = 10
#: Idle connections a pool keeps however long they idle.
MIN_SIZE = 1
#: A caller waits this long for a free connection before the database counts as away.
WAIT_SECONDS = 10.0
#: Connections above MIN_SIZE idle for this long are closed.
MAX_IDLE_SECONDS = 300.0
SIZE_VARIABLE = "JOBSYS_PRODUCER_POOL_SIZE"
#: A connection lost mid-defer: what the caller cannot know, and what to do.
LOST_HINT = (
    "The server may have inserted the job before the connection went: check "
    "(`jobsys jobs list --task ...`) before deferring again, or defer with a queueing "
    "lock or a unique key, so that deferring again cannot add a second job."
)
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
class _Pool:
    """The connections of one event loop to one database."""

    loop: asyncio.AbstractEventLoop
    url: str
    idle: list[tuple[Any, float]] = field(default_factory=list)  # (connection, since)
    owned: set[Any] = field(default_factory=set)
    combiners: dict[Any, _Combiner] = field(default_factory=dict)
    closed: bool = False
    #: The async generator whose finalisation (the loop shutting down) closes the pool.
    sentinel: AsyncGenerator[None, None] | None = None
    #: After the exit handler: not registered, no connection kept; each defer opens
    #: its own and closes it (:func:`_with_one_connection`).
    one_shot: bool = False


@dataclass
class _Process:
    """The pools of this process, their loops' registry and the shared bound."""

    pid: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    pools: dict[tuple[int, str], _Pool] = field(default_factory=dict)
    used: int = 0  # connections open or being opened, over every pool
    waiters: deque[tuple[asyncio.AbstractEventLoop, asyncio.Future[None]]] = field(
        default_factory=deque
    )
    loop: asyncio.AbstractEventLoop | None = None  # sync callers' loop, on its thread
    thread: threading.Thread | None = None
    #: close() has begun: no new defer may go to ``loop`` (see :func:`_submit`).
    closing: bool = False


@dataclass(eq=False)
class _SlotWaiter:
    """A one-shot defer waiting for a connection slot (see :func:`_one_shot_slot`)."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[None]
    #: A freed slot was handed to this waiter (set under the slots' lock).
    granted: bool = False


@dataclass
class _Slots:
    """One-shot connections open at once, over every thread and loop of the process."""

    pid: int
    lock: threading.Lock = field(default_factory=threading.Lock)
    used: int = 0
    waiters: deque[_SlotWaiter] = field(default_factory=deque)


_lock = threading.Lock()
_process: _Process | None = None
#: The interpreter is exiting and closed the pools: no defer opens them again (a
#: later one has a connection of its own, see :func:`_pool` and :func:`run_sync`).
#: Set and read under ``_lock`` (:func:`_current`).
_exited = False
#: After the exit handler: each loop's one-shot pool per URL (no connection at rest,
#: only the calls being combined), so that a loop's concurrent defers share statements.
_one_shot_pools: dict[tuple[int, str], _Pool] = {}
_slots: _Slots | None = None
#: Pools inherited from a parent process: never used, never closed, never collected.
_inherited: list[_Process] = []


def _current() -> _Process | None:
    """This process's pools; None once the exit handler closed them for good (a defer
    then takes the one-shot path: a pool opened then is one that nothing would close).
    ``_exited`` is read under the lock the exit handler sets it with, so a defer that
    began before the exit handler and gets here after it never opens a new pool."""
    global _process
    process = _process
    if process is not None and process.pid == os.getpid():
        # Still the current one: if the exit handler runs meanwhile, its close() takes
        # this process, and a pool or defer added to it under ``closing`` is closed or
        # waited for (see _pool and _submit).
        return process
    with _lock:
        if _exited:
            return None
        if _process is not None and _process.pid == os.getpid():
            return _process
        if _process is not None:  # forked: the parent's pools are not ours
            _inherited.append(_process)
        _process = _Process(pid=os.getpid())
        return _process


def _finish(conn: Any) -> None:
    """Close a connection from any thread (psycopg's close only ends the libpq
    connection, which needs no event loop)."""
    with contextlib.suppress(Exception):
        conn.pgconn.finish()


def _give_back(process: _Process, count: int = 1) -> None:
    """``count`` connections closed: wake as many callers waiting for one."""
    with process.lock:
        process.used -= count
        wake = [process.waiters.popleft() for _ in range(min(count, len(process.waiters)))]
    for loop, future in wake:
        _wake(loop, future)


def _wake(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> None:
    def done() -> None:
        if not future.done():
            future.set_result(None)

    with contextlib.suppress(RuntimeError):  # that loop closed meanwhile
        loop.call_soon_threadsafe(done)


def _discard(process: _Process, pool: _Pool) -> None:
    """Close ``pool`` at once, from any thread (its loop closed, or the process ends)."""
    pool.closed = True
    conns = list(pool.owned)
    pool.owned.clear()
    pool.idle.clear()
    for conn in conns:
        _finish(conn)
    _unregister(process, pool, closed=len(conns))


def _unregister(process: _Process, pool: _Pool, *, closed: int) -> None:
    """``pool`` is no longer the process's pool of its loop and URL; the ``closed``
    connections it just finished give their places back."""
    with process.lock:
        if process.pools.get((id(pool.loop), pool.url)) is pool:
            del process.pools[(id(pool.loop), pool.url)]
    if closed:
        _give_back(process, closed)


def _sweep(process: _Process) -> None:
    """Close the pools of loops that were closed without finalising their pool."""
    with process.lock:
        dead = [p for p in process.pools.values() if p.loop.is_closed()]
    for pool in dead:
        _discard(process, pool)


async def _sentinel(process: _Process, pool: _Pool) -> AsyncGenerator[None, None]:
    try:
        yield
    finally:  # the loop shuts its async generators down: it is about to close
        await _aclose_pool(process, pool)


async def _pool(url: str) -> _Pool:
    """This loop's pool for ``url``; created on first use. After the exit handler, a
    one-shot pool: nothing would close a pool opened then."""
    loop = asyncio.get_running_loop()
    while True:
        process = _current()
        if process is None:
            return _one_shot_pool(loop, url)
        pool = process.pools.get((id(loop), url))
        if pool is not None and pool.loop is loop and not pool.closed:
            return pool
        _sweep(process)  # a new loop: an older one may have closed (ids are reused)
        pool = _Pool(loop=loop, url=url)
        with process.lock:
            # Added under the lock close() takes to set ``closing``, as in _submit: added
            # after, it would miss close()'s list of pools and stay open. It goes to the
            # next pools instead (close() has already made them the current ones).
            if process.closing:
                continue
            process.pools[(id(loop), url)] = pool
        break
    # The loop's async-generator hooks see this generator: when the loop shuts down
    # (asyncio.run's end), it is finalised and the pool closes with it.
    sentinel = pool.sentinel = _sentinel(process, pool)
    await sentinel.asend(None)
    return pool


def _one_shot_pool(loop: asyncio.AbstractEventLoop, url: str) -> _Pool:
    """After the exit handler: ``loop``'s one-shot pool for ``url``. It holds no
    connection between statements, so a loop that ends leaves nothing to close; it
    only lets the loop's concurrent defers share statements."""
    key = (id(loop), url)
    with _lock:
        pool = _one_shot_pools.get(key)
        if pool is not None and pool.loop is loop:
            return pool
        for old in [k for k, p in _one_shot_pools.items() if p.loop.is_closed()]:
            del _one_shot_pools[old]  # ids of closed loops are reused
        pool = _one_shot_pools[key] = _Pool(loop=loop, url=url, one_shot=True)
        return pool


def _slots_here() -> _Slots:
    """The one-shot connection slots of this process (a forked child has its own)."""
    global _slots
    with _lock:
        if _slots is None or _slots.pid != os.getpid():
            _slots = _Slots(pid=os.getpid())
        return _slots


@contextlib.asynccontextmanager
async def _one_shot_slot(pool: _Pool) -> AsyncGenerator[None, None]:
    """Hold one of the process's ``max_size`` one-shot connection slots (over every
    thread and loop: daemon threads' ``defer_sync`` each run on a loop of their own).
    A caller beyond waits without blocking its loop, up to :data:`WAIT_SECONDS` as for
    a pooled connection: a burst at exit (300 concurrent defers) used to open a
    connection each and exhaust ``max_connections``, losing the jobs past it."""
    slots = _slots_here()
    await _take_slot(slots, pool)
    try:
        yield
    finally:
        _free_slot(slots)


async def _take_slot(slots: _Slots, pool: _Pool) -> None:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        with slots.lock:
            if slots.used < max(max_size(), MIN_SIZE):
                slots.used += 1
                return
            # Queued under the same lock as the check: a slot freed in between wakes it.
            waiter = _SlotWaiter(pool.loop, pool.loop.create_future())
            slots.waiters.append(waiter)
        remaining = deadline - time.monotonic()
        try:
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(waiter.future, remaining)
        except BaseException:  # cancelled: a slot handed over meanwhile goes on
            _leave(slots, waiter)
            raise
        with slots.lock:
            if waiter.granted:
                return
            with contextlib.suppress(ValueError):
                slots.waiters.remove(waiter)
        if time.monotonic() >= deadline:
            raise _timeout(pool.url, f"no free connection after {WAIT_SECONDS:g} s")


def _leave(slots: _Slots, waiter: _SlotWaiter) -> None:
    with slots.lock:
        granted = waiter.granted
        if not granted:
            with contextlib.suppress(ValueError):
                slots.waiters.remove(waiter)
    if granted:
        _free_slot(slots)


def _free_slot(slots: _Slots) -> None:
    """A one-shot connection closed: its slot goes to the first waiter (handed over,
    so that no newcomer takes it first), else back to the count."""
    while True:
        with slots.lock:
            if not slots.waiters:
                slots.used -= 1
                return
            waiter = slots.waiters.popleft()
            waiter.granted = True
        if _woken(waiter.loop, waiter.future):
            return
        # That waiter's loop is closed: nobody will take the slot there; next one.


def _woken(loop: asyncio.AbstractEventLoop, future: asyncio.Future[None]) -> bool:
    def done() -> None:
        if not future.done():
            future.set_result(None)

    try:
        loop.call_soon_threadsafe(done)
    except RuntimeError:  # that loop closed meanwhile
        return False
    return True


async def _connect(url: str, *, resolve_here: bool = False) -> Any:
    """A new connection to ``url`` (errors name ``url``, redacted); ``resolve_here``:
    its host name resolved on the calling thread (:func:`_resolved`)."""
    from psycopg.rows import dict_row

    from jobsys.db.connect import CONNECT_TIMEOUT_SECONDS, driver_options, translate
    from jobsys.db.direct import DirectConnection

    try:
        # The defer statement skips psycopg's cursor machinery (jobsys.db.direct).
        return await DirectConnection.connect(
            _resolved(url) if resolve_here else url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            row_factory=dict_row,
            **driver_options(APPLICATION_NAME),
        )
    except Exception as exc:
        raise translate(exc, url) from None


def _resolved(url: str) -> str:
    """``url`` with every host psycopg would try resolved here, on the calling thread.
    psycopg resolves host names in the loop's executor, and after the exit handler
    thread pools refuse new work ("cannot schedule new futures after interpreter
    shutdown"): the defer would fail as "cannot connect".

    Every attempt psycopg would make (several hosts in the URL, ``PGHOST``/``PGPORT``,
    a name with several addresses) becomes one item of the ``host``/``hostaddr``/``port``
    lists, in psycopg's order. An attempt without an address (a socket folder) keeps an
    empty ``hostaddr`` item, which libpq reads as "use host"; an IP literal is its own
    address (psycopg leaves ``::1`` unresolved, taking it for a Windows drive)."""
    from psycopg.conninfo import conninfo_attempts, conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(url)
    if _param(params, "hostaddr"):
        return url  # psycopg resolves nothing
    # target_session_attrs and load_balance_hosts stay in ``url``: psycopg applies them
    # to the lists (a prefer-standby pass, a shuffle); here, one attempt per address.
    plain = {**params, "target_session_attrs": "any", "load_balance_hosts": "disable"}
    # An unknown name raises psycopg's "failed to resolve host", which the caller
    # translates as for any connect; names that resolve are kept, as psycopg does.
    attempts = conninfo_attempts(plain)
    hosts = [_param(a, "host") for a in attempts]
    if not any(hosts):
        return url  # libpq's default socket
    addresses = [
        _param(a, "hostaddr") or _ip_literal(h) for a, h in zip(attempts, hosts, strict=True)
    ]
    if not any(addresses):
        return url  # socket folders only: psycopg resolves nothing
    ports = [_param(a, "port") for a in attempts]
    lists = {"host": ",".join(hosts), "hostaddr": ",".join(addresses)}
    if any(ports):  # an empty item is libpq's default port
        lists["port"] = ",".join(ports)
    return make_conninfo(url, **lists)


#: The variables libpq reads the address parameters from when the URL has none.
_PARAM_VARIABLES = {"host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT"}


def _param(params: Any, name: str) -> str:
    """An address parameter as libpq (and psycopg's resolution) reads it: the URL's,
    else its ``PG*`` variable's."""
    if name in params:
        return str(params[name] or "")
    return os.environ.get(_PARAM_VARIABLES[name], "")


def _ip_literal(host: str) -> str:
    """``host`` if it is an IP address (no lookup needed), else ""."""
    import ipaddress

    try:
        ipaddress.ip_address(host)
    except ValueError:
        return ""
    return host


def _close_stale(pool: _Pool, now: float) -> int:
    """Close idle connections beyond MIN_SIZE unused for MAX_IDLE_SECONDS."""
    stale = [c for c, since in pool.idle[:-MIN_SIZE] if now - since > MAX_IDLE_SECONDS]
    for conn in stale:
        pool.idle = [(c, s) for c, s in pool.idle if c is not conn]
        pool.owned.discard(conn)
        _finish(conn)
    return len(stale)


def _shed_idle(process: _Process, pool: _Pool) -> None:
    """On ``pool``'s loop: give one idle connection up for a loop that waits."""
    if pool.idle:
        conn, _ = pool.idle.pop(0)
        _forget(process, pool, conn)


def _ask_for_idle(process: _Process, pool: _Pool) -> None:
    """No connection left to open: ask another loop to give up an idle one."""
    with process.lock:
        others = [p for p in process.pools.values() if p is not pool and p.idle]
    for other in others:
        if other.loop.is_closed():
            _discard(process, other)
            return
        if other.loop.is_running():
            with contextlib.suppress(RuntimeError):
                other.loop.call_soon_threadsafe(_shed_idle, process, other)
                return


async def _acquire(process: _Process, pool: _Pool) -> Any:
    deadline = time.monotonic() + WAIT_SECONDS
    while True:
        while pool.idle:
            conn, _ = pool.idle.pop()
            # The server closed it while it idled (restart, pg_terminate_backend, a
            # timeout): nothing was sent on it, so close it and take the next, rather
            # than fail a defer with ConnectionLost ("the job may be in").
            if not conn.closed and not conn.server_spoke():
                return conn
            _forget(process, pool, conn)
        limit = max(max_size(), MIN_SIZE)
        with process.lock:
            may_open = process.used < limit
            if may_open:
                process.used += 1
        if may_open:
            try:
                conn = await _connect(pool.url)
            except BaseException:
                _give_back(process)
                raise
            # The pool may have closed while this connected (close() from another
            # thread): the defer began before, so it still runs on the connection,
            # which closes when returned (_release), as for a defer already running.
            pool.owned.add(conn)
            return conn
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _timeout(pool.url, f"no free connection after {WAIT_SECONDS:g} s")
        future: asyncio.Future[None] = pool.loop.create_future()
        with process.lock:
            process.waiters.append((pool.loop, future))
        _ask_for_idle(process, pool)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(future, remaining)
        finally:
            with process.lock, contextlib.suppress(ValueError):
                process.waiters.remove((pool.loop, future))


def _timeout(url: str, detail: str) -> Exception:
    from psycopg_pool import PoolTimeout

    from jobsys.db.connect import translate

    return translate(PoolTimeout(detail), url)


def _release(process: _Process, pool: _Pool, conn: Any) -> None:
    reusable = (
        not pool.closed and not conn.closed and conn.pgconn.transaction_status == PQTRANS_IDLE
    )
    with process.lock:
        waiter = process.waiters[0] if process.waiters else None
    if reusable and (waiter is None or waiter[0] is pool.loop):
        now = time.monotonic()
        pool.idle.append((conn, now))
        closed = _close_stale(pool, now)
        if closed:
            _give_back(process, closed)
        if waiter is not None:
            with process.lock, contextlib.suppress(ValueError):
                process.waiters.remove(waiter)
            _wake(*waiter)
        return
    # Broken, mid-transaction, or another loop waits for a connection: close it.
    _forget(process, pool, conn)


def _forget(process: _Process, pool: _Pool, conn: Any) -> None:
    """Close ``conn`` and count it out (once: a pool closed meanwhile counted it)."""
    _finish(conn)
    if conn in pool.owned:
        pool.owned.discard(conn)
        _give_back(process)


async def _with_connection(pool: _Pool, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work`` on a connection of ``pool``; once more on another if the connection was
    lost before its statement was sent (``JOBSYS_DB_PREPARE``: while preparing it), as
    for an idle connection the server closed (:func:`_acquire`)."""
    from jobsys.db.direct import StatementNotSent

    try:
        return await _with_one_connection(pool, work)
    except StatementNotSent:
        pass
    try:
        return await _with_one_connection(pool, work)
    except StatementNotSent as exc:
        from jobsys.db.connect import lost_before_sending

        raise lost_before_sending(
            exc, pool.url, during="before the defer was sent (nothing was inserted)"
        ) from None


async def _with_one_connection(pool: _Pool, work: Callable[[Any], Awaitable[T]]) -> T:
    process = _current()
    if pool.one_shot or process is None:
        # After the exit handler (a pool closed by it, whose defer goes on, included):
        # a connection of its own, within the process's one-shot slots.
        async with _one_shot_slot(pool):
            conn = await _connect(pool.url, resolve_here=True)
            try:
                return await _lost_as_such(pool, conn, work)
            finally:
                _finish(conn)
    conn = await _acquire(process, pool)
    try:
        return await _lost_as_such(pool, conn, work)
    finally:
        _release(process, pool, conn)


async def _lost_as_such(pool: _Pool, conn: Any, work: Callable[[Any], Awaitable[T]]) -> T:
    """``work(conn)``; a connection lost under it is :class:`ConnectionLost`."""
    try:
        return await work(conn)
    except Exception as exc:
        import psycopg

        from jobsys.db.direct import StatementNotSent

        if (
            isinstance(exc, psycopg.OperationalError)
            and not isinstance(exc, StatementNotSent)
            and (conn.broken or conn.closed)
        ):
            from jobsys.db.connect import lost

            # The connection opened; the statement may have reached the server and
            # committed before it went: not "cannot connect".
            raise lost(exc, pool.url, during="while deferring", hint=LOST_HINT) from None
        raise


async def run_combined(
    url: str,
    item: Any,
    work: Callable[[Any, list[Any]], Awaitable[list[Any]]],
) -> Any:
    """``work(connection, items)`` for ``item`` together with the other items submitted
    to the same ``work`` on the same loop at the same moment: one statement (one round
    trip, one commit) for calls that arrive while the others are being written. A call
    alone is written at once (no delay is added). ``work`` returns one result per item;
    if it raises for a batch of several, each item is written on its own, so one call's
    error (a queueing-lock conflict) is that call's alone."""
    pool = await _pool(url)
    combiner = pool.combiners.setdefault(work, _Combiner())
    if not combiner.writers:
        # Nothing is being written: this call goes out at once, in the caller's own
        # task (no hand-over); calls arriving meanwhile wait for the next statement.
        combiner.writers += 1
        try:
            (result,) = await _with_connection(pool, _bound(work, [item]))
        finally:
            combiner.writers -= 1
            _spawn_writer(pool, combiner, work)
        return result
    future: asyncio.Future[Any] = pool.loop.create_future()
    combiner.pending.append((item, future))
    _spawn_writer(pool, combiner, work)
    return await future


def _spawn_writer(
    pool: _Pool, combiner: _Combiner, work: Callable[[Any, list[Any]], Awaitable[list[Any]]]
) -> None:
    """A writer task for waiting calls, if they have none free. One writer per
    connection the pool may open: the calls that arrive while every writer is busy go
    out together with the next statement (a writer in a task, so that cancelling one
    caller never cancels a statement that carries other calls)."""
    if combiner.pending and combiner.writers < max(max_size(), MIN_SIZE):
        combiner.writers += 1
        pool.loop.create_task(_write_combined(pool, combiner, work))


async def _write_combined(
    pool: _Pool,
    combiner: _Combiner,
    work: Callable[[Any, list[Any]], Awaitable[list[Any]]],
) -> None:
    try:
        while combiner.pending:
            batch = combiner.pending[:COMBINE_MAX_CALLS]
            del combiner.pending[:COMBINE_MAX_CALLS]
            try:
                results = await _with_connection(pool, _bound(work, [i for i, _ in batch]))
            except BaseException as exc:
                if len(batch) == 1 or not isinstance(exc, Exception) or _unavailable(exc):
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for one in batch:  # one call's error must not fail the others
                    await _write_one(pool, one, work)
                continue
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
    finally:
        combiner.writers -= 1


def _unavailable(exc: BaseException) -> bool:
    """The database went away (or was never reached): writing each call of the batch on
    its own would not help, and after a lost connection could insert a job twice (the
    batch's statement may have committed)."""
    from jobsys.errors import DatabaseUnavailable

    return isinstance(exc, DatabaseUnavailable)


def _bound(
    work: Callable[[Any, list[Any]], Awaitable[list[Any]]], items: list[Any]
) -> Callable[[Any], Awaitable[list[Any]]]:
    """``work`` for these ``items``: a function of the connection only."""

    def on(conn: Any) -> Awaitable[list[Any]]:
        return work(conn, items)

    return on


async def _write_one(
    pool: _Pool,
    one: tuple[Any, asyncio.Future[Any]],
    work: Callable[[Any, list[Any]], Awaitable[list[Any]]],
) -> None:
    item, future = one
    try:
        (result,) = await _with_connection(pool, _bound(work, [item]))
    except Exception as exc:
        if not future.done():
            future.set_exception(exc)
    else:
        if not future.done():
            future.set_result(result)


async def run(url: str, work: Callable[[Any], Awaitable[T]]) -> T:
    """Await ``work(connection)`` on a pooled connection of this loop to ``url``."""
    return await _with_connection(await _pool(url), work)


def _submit(coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T] | None:
    """Hand ``coro`` to the process's sync-callers loop (started on first use); None
    after the exit handler stopped it for good."""
    while True:
        process = _current()
        if process is None:
            return None
        with process.lock:
            # Checked and submitted under the lock close() takes to set ``closing``:
            # a defer handed over before runs to its end (close() waits for it); one
            # after would reach a loop that is stopping, and never run. It goes to the
            # next pool instead (close() has already made it the current one).
            if process.closing:
                continue
            if process.loop is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="jobsys-producer-pool", daemon=True
                )
                thread.start()
                process.loop, process.thread = loop, thread
            return asyncio.run_coroutine_threadsafe(coro, process.loop)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on the process's sync-callers loop and wait (any thread)."""
    future = _submit(coro)
    if future is None:
        return _run_alone(coro)
    try:
        return future.result()
    except concurrent.futures.CancelledError:
        # Only close() cancels this loop's tasks (after waiting CLOSE_WAIT_SECONDS).
        from jobsys.errors import ConnectionLost

        raise ConnectionLost(
            "the producer pool was closed (jobsys.db.producers.close()) while this defer "
            "ran; it was cancelled",
            hint=LOST_HINT,
        ) from None


def _run_alone(coro: Coroutine[Any, Any, T]) -> T:
    """After the exit handler stopped the sync callers' loop: ``coro`` on a loop of its
    own, on the calling thread (an exit handler, a daemon thread), closed with it. Its
    defer takes a one-shot pool (:func:`_pool`): one connection, closed when done."""
    loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        with contextlib.suppress(Exception):
            loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


def open_connections() -> int:
    """Connections the pools of this process hold (open and in use)."""
    process = _process
    if process is None or process.pid != os.getpid():
        return 0
    _sweep(process)
    with process.lock:
        return sum(len(pool.owned) for pool in process.pools.values())


def _close_idle(process: _Process, pool: _Pool) -> None:
    """On ``pool``'s loop: close its idle connections; those in use close when returned
    (:func:`_release`), so a defer running on one ends as it would have."""
    pool.closed = True
    idle = [conn for conn, _ in pool.idle if conn in pool.owned]
    pool.idle.clear()
    for conn in idle:
        pool.owned.discard(conn)
        _finish(conn)
    _unregister(process, pool, closed=len(idle))


async def _aclose_pool(process: _Process, pool: _Pool) -> None:
    """On ``pool``'s loop: :func:`_close_idle`."""
    _close_idle(process, pool)


#: ``close()`` waits this long for the defers running on the sync callers' loop, then
#: cancels them (their callers get :class:`~jobsys.errors.ConnectionLost`).
CLOSE_WAIT_SECONDS = 5.0
#: A cancelled defer's cancellation is bounded (``jobsys.db.direct``: 5 s); a margin.
_CANCELLED_WAIT_SECONDS = 7.0


async def _settle(seconds: float) -> None:
    """On the sync callers' loop: wait up to ``seconds`` for its other tasks (defers of
    threads in ``defer_sync``), then cancel those left and wait for their end."""
    me = asyncio.current_task()
    tasks = {t for t in asyncio.all_tasks() if t is not me}
    if not tasks:
        return
    _, pending = await asyncio.wait(tasks, timeout=seconds)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=_CANCELLED_WAIT_SECONDS)


def _stop_sync_loop(loop: asyncio.AbstractEventLoop, thread: threading.Thread) -> None:
    """Let the sync callers' defers end (bounded), stop the loop, then cancel any task
    that arrived meanwhile so that no caller waits on a loop that no longer runs."""
    if threading.current_thread() is thread:  # close() from a defer's own loop
        loop.stop()
        return
    if loop.is_running():
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_settle(CLOSE_WAIT_SECONDS), loop).result(
                CLOSE_WAIT_SECONDS + _CANCELLED_WAIT_SECONDS + 1
            )
        with contextlib.suppress(RuntimeError):
            loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    if loop.is_running() or loop.is_closed():
        return
    left = asyncio.all_tasks(loop)
    if left:
        for task in left:
            task.cancel()
        with contextlib.suppress(Exception):
            loop.run_until_complete(asyncio.wait(left, timeout=_CANCELLED_WAIT_SECONDS))
    loop.close()


def close() -> None:
    """Close this process's producer pools (the next defer opens them again)."""
    global _process
    with _lock:
        process, _process = _process, None
    if process is None:
        return
    if process.pid != os.getpid():
        _inherited.append(process)
        return
    with process.lock:
        process.closing = True
    try:
        running: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    with process.lock:
        pools = list(process.pools.values())
    for pool in pools:
        # A running loop's pool closes its idle connections on that loop; those in use
        # close when their defer returns them (finishing them under a running defer left
        # it waiting on a closed socket with no end).
        if pool.loop is running:
            _close_idle(process, pool)
            continue
        if pool.loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(_aclose_pool(process, pool), pool.loop).result(10)
            except Exception:  # that loop did not answer: close everything from here
                _discard(process, pool)
            continue
        _discard(process, pool)  # a loop that no longer runs: nothing can use them
    loop, thread = process.loop, process.thread
    if loop is not None and thread is not None:
        _stop_sync_loop(loop, thread)


async def aclose() -> None:
    """:func:`close` for async code (an ASGI lifespan's shutdown)."""
    process = _process
    if process is not None and process.pid == os.getpid():
        loop = asyncio.get_running_loop()
        if loop is process.loop:
            raise UsageError("producers.aclose() cannot run on the producer pool's own loop")
        for pool in [p for p in list(process.pools.values()) if p.loop is loop]:
            await _aclose_pool(process, pool)
    await asyncio.get_running_loop().run_in_executor(None, close)


def _close_at_exit() -> None:
    """At interpreter exit: :func:`close`, for good. A later defer (an exit handler
    registered before this one, a daemon thread) has a connection of its own, closed
    when it is done: a pool opened then is one that nothing would close."""
    global _exited
    with _lock:  # read under it by _current: no defer opens a process after this
        _exited = True
    close()


atexit.register(_close_at_exit)
