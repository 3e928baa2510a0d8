"""``jobsys.defer`` without a connection outside a worker: one process-wide pool
(``jobsys.db.producers``), reused by every call, bounded under concurrency, shared by
threads and event loops, and never the parent's connections in a forked child."""

from __future__ import annotations

import asyncio
import contextlib
import json
import multiprocessing
import socket
import subprocess
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from chaos_proxy import ChaosProxy
from pgbouncer_support import pgbouncer
from rt_support import query
from test_defer import api_env  # noqa: F401  (fixture: the API on the test topology)

from jobsys.db import producers
from jobsys.engine import inserts
from jobsys.errors import DatabaseUnavailable, UsageError


def backends(db_url: str) -> int:
    """Connections the producer pool holds on the test database, seen by the server."""
    # current_database(), not the URL's last path segment: the embedded server's URL
    # ends in ?host=/socket/dir, whose last segment is no database name.
    rows = query(
        db_url,
        "SELECT count(*) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s",
        (producers.APPLICATION_NAME,),
    )
    return int(rows[0][0])


def count_jobs(db_url: str) -> int:
    return int(query(db_url, "SELECT count(*) FROM procrastinate_jobs")[0][0])


async def test_sequential_defers_reuse_one_connection(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    import jobsys

    for n in range(20):
        await jobsys.defer("rt.sleep", {"tag": f"t{n}"})
    assert count_jobs(db_url) == 20
    assert backends(db_url) == 1
    assert producers.open_connections() == 1


async def test_fifty_concurrent_producers_open_at_most_the_pool_size(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import jobsys

    monkeypatch.setenv(producers.SIZE_VARIABLE, "4")
    peak = 0

    async def producer(n: int) -> int:
        nonlocal peak
        job_id = await jobsys.defer("rt.sleep", {"tag": f"p{n}"})
        peak = max(peak, producers.open_connections())
        return job_id

    ids = await asyncio.gather(*(producer(n) for n in range(50)))
    assert len(set(ids)) == 50
    assert count_jobs(db_url) == 50
    assert 1 <= peak <= 4
    assert backends(db_url) <= 4


async def test_concurrent_defers_share_statements_and_a_conflict_fails_alone(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    """Defers made at the same moment go out together (fewer commits than calls), each
    call gets its own job's id, and a queueing-lock conflict fails only its own call."""
    import jobsys
    from jobsys.errors import AlreadyQueuedError

    await jobsys.defer("rt.sleep", {"tag": "warm"})  # the pool is open
    listener = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
    await listener.execute("LISTEN jobsys_events")
    ids = await asyncio.gather(*(jobsys.defer("rt.sleep", {"tag": f"c{n}"}) for n in range(40)))
    # One statement, one announcement: fewer of them than calls, every job counted.
    announced = []
    async for note in listener.notifies(timeout=2.0):
        announced.append(json.loads(note.payload)["deferred"])
    await listener.close()
    assert sum(announced) == 40 and len(announced) < 40, announced
    tags = dict(query(db_url, "SELECT id, args->>'tag' FROM procrastinate_jobs"))
    assert [tags[i] for i in ids] == [f"c{n}" for n in range(40)]  # each call's own id

    calls = [jobsys.defer("rt.sleep", {"tag": f"d{n}"}) for n in range(5)]
    calls += [jobsys.defer("rt.sleep", {"tag": t}, queueing_lock="L") for t in ("a", "b")]
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert [type(r) for r in results].count(AlreadyQueuedError) == 1, results
    assert len({r for r in results if isinstance(r, int)}) == 6
    assert count_jobs(db_url) == 1 + 40 + 6


def test_sync_defers_from_many_threads_share_the_pool(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    import jobsys

    ids: list[int] = []
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for k in range(5):
                ids.append(jobsys.defer_sync("rt.sleep", {"tag": f"s{n}.{k}"}))
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert len(set(ids)) == 40
    assert count_jobs(db_url) == 40
    assert backends(db_url) <= producers.DEFAULT_MAX_SIZE


def _defer_in_child(result: multiprocessing.Queue, on_a_loop: bool = False) -> None:  # type: ignore[type-arg]
    """A defer in a forked child: sync, or async on a new event loop of the child."""
    import jobsys

    try:
        if on_a_loop:
            job_id = asyncio.run(jobsys.defer("rt.sleep", {"tag": "child"}))
        else:
            job_id = jobsys.defer_sync("rt.sleep", {"tag": "child"})
        result.put(("ok", job_id))
    except BaseException as exc:
        result.put(("error", repr(exc)))


def test_a_forked_child_opens_its_own_pool_and_leaves_the_parents_alone(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    import jobsys

    jobsys.defer_sync("rt.sleep", {"tag": "parent-before"})
    context = multiprocessing.get_context("fork")
    result: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
    child = context.Process(target=_defer_in_child, args=(result,))
    child.start()
    status, value = result.get(timeout=60)
    child.join(30)
    assert status == "ok", value
    assert child.exitcode == 0
    # The parent's connection survived the child (and its exit): it still defers on it.
    jobsys.defer_sync("rt.sleep", {"tag": "parent-after"})
    assert count_jobs(db_url) == 3
    assert backends(db_url) == 1


def test_an_unreachable_database_is_database_unavailable(
    api_env: dict[str, str],  # noqa: F811
) -> None:
    async def nothing(conn: object) -> None:
        return None

    with pytest.raises(DatabaseUnavailable, match="cannot connect to the database"):
        asyncio.run(producers.run("postgresql://postgres@127.0.0.1:1/nowhere", nothing))


def test_a_bad_pool_size_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(producers.SIZE_VARIABLE, "many")
    with pytest.raises(UsageError, match="JOBSYS_PRODUCER_POOL_SIZE='many'"):
        producers.max_size()


@pytest.mark.parametrize("setting", ["", "1"])
async def test_statements_are_prepared_on_the_server_only_when_opted_in(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
) -> None:
    """Off by default (a transaction-mode PgBouncer before 1.21 cannot carry prepared
    statements); ``JOBSYS_DB_PREPARE=1`` prepares the defer statement once on the pool's
    connection, at its first run, and runs it by name after that (``jobsys.db.direct``:
    it still skips psycopg's cursor, which used to prepare it as ``_pg3_0``)."""
    import jobsys
    from jobsys.db.connect import PREPARE_VARIABLE
    from jobsys.db.direct import DirectConnection

    def no_cursor(*args: object, **kwargs: object) -> None:
        raise AssertionError("a defer statement went through psycopg's cursor")

    monkeypatch.setenv(PREPARE_VARIABLE, setting)
    producers.close()  # connections opened from here on see the setting
    with monkeypatch.context() as patched:
        patched.setattr(DirectConnection, "cursor", no_cursor)
        for n in range(3):
            await jobsys.defer("rt.sleep", {"tag": f"prep{n}"})
        await jobsys.defer_many("rt.sleep", [{"tag": "m1"}, {"tag": "m2"}])
    assert await producers.run(db_url, prepared_statements) == (
        {"jobsys_defer_one": 3, "jobsys_defer_uniform": 1} if setting else {}
    )
    assert count_jobs(db_url) == 5


async def prepared_statements(conn: psycopg.AsyncConnection) -> dict[str, int]:
    """jobsys's statements prepared on ``conn``'s session and how often each ran
    (psycopg's own, ``_pg3_*``, left out: with ``JOBSYS_DB_PREPARE`` it prepares this
    very query)."""
    cur = await conn.execute(
        "SELECT name, generic_plans + custom_plans AS runs FROM pg_prepared_statements"
        " WHERE name LIKE 'jobsys%'"
    )
    # Each name ends in its text's digest (jobsys.db.direct.statement_name).
    return {row["name"].rsplit("_", 1)[0]: int(row["runs"]) for row in await cur.fetchall()}


@pytest.mark.parametrize(
    "forget",
    ["DISCARD ALL", "DEALLOCATE ALL", f"DEALLOCATE {inserts._DIRECT_STATEMENTS[True][1].decode()}"],
)
async def test_a_prepared_defer_the_session_forgot_is_prepared_again(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    forget: str,
) -> None:
    """The server session forgot the prepared defer statement (``DISCARD ALL`` as a
    pooler's reset runs it, ``DEALLOCATE``): the next defer prepares it again and is
    written once; nothing ran the first time (SQLSTATE 26000)."""
    import jobsys
    from jobsys.db.connect import PREPARE_VARIABLE

    monkeypatch.setenv(PREPARE_VARIABLE, "1")
    producers.close()
    await jobsys.defer("rt.sleep", {"tag": "before"})

    async def run_forget(conn: psycopg.AsyncConnection) -> None:
        await conn.execute(forget)

    await producers.run(db_url, run_forget)
    assert "jobsys_defer_one" not in await producers.run(db_url, prepared_statements)
    await jobsys.defer("rt.sleep", {"tag": "after"})
    await jobsys.defer("rt.sleep", {"tag": "again"})
    tags = [row[0] for row in query(db_url, "SELECT args->>'tag' FROM procrastinate_jobs")]
    assert sorted(tags) == ["after", "again", "before"]
    assert await producers.run(db_url, prepared_statements) == {"jobsys_defer_one": 2}
    assert backends(db_url) == 1


def test_a_bad_prepare_setting_is_a_usage_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from jobsys.db.connect import PREPARE_VARIABLE, prepare_threshold

    monkeypatch.setenv(PREPARE_VARIABLE, "sometimes")
    with pytest.raises(UsageError, match="JOBSYS_DB_PREPARE='sometimes'"):
        prepare_threshold()


def wait_for_backends(db_url: str, expected: int, timeout: float = 10.0) -> int:
    """The server's count of producer connections once it reaches ``expected`` (a
    closed connection leaves pg_stat_activity a moment later), or the last count."""
    import time

    deadline = time.monotonic() + timeout
    seen = backends(db_url)
    while seen != expected and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = backends(db_url)
    return seen


def test_each_loop_defers_on_its_own_pool_and_a_closing_loop_closes_it(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    """An async caller uses a pool of its own loop (no hand-over to another thread):
    two loops at once hold a connection each, and a loop that shuts down
    (``asyncio.run``'s end) closes its pool; one closed without that is swept."""
    import jobsys

    started = threading.Event()
    release = threading.Event()
    seen: dict[str, object] = {}

    async def other_loop() -> None:
        seen["other"] = await jobsys.defer("rt.sleep", {"tag": "other"})
        started.set()
        while not release.is_set():  # the loop stays up (and its pool open)
            await asyncio.sleep(0.01)

    thread = threading.Thread(target=asyncio.run, args=(other_loop(),))
    thread.start()
    assert started.wait(30)

    async def main_loop() -> int:
        job_id = await jobsys.defer("rt.sleep", {"tag": "main"})
        await jobsys.defer("rt.sleep", {"tag": "main2"})
        assert producers.open_connections() == 2  # one per loop
        assert backends(db_url) == 2
        return job_id

    assert isinstance(asyncio.run(main_loop()), int)
    # main_loop's loop shut down: its connection closed with it; the other's is open.
    assert producers.open_connections() == 1
    assert wait_for_backends(db_url, 1) == 1
    release.set()
    thread.join(30)
    assert producers.open_connections() == 0
    assert wait_for_backends(db_url, 0) == 0

    # A loop closed without shutting its async generators down: swept on the next use.
    loop = asyncio.new_event_loop()
    loop.run_until_complete(jobsys.defer("rt.sleep", {"tag": "unfinalised"}))
    assert producers.open_connections() == 1
    loop.close()
    assert producers.open_connections() == 0
    assert wait_for_backends(db_url, 0) == 0
    assert count_jobs(db_url) == 4


def test_loops_share_the_bound_an_idle_loop_gives_its_connection_up(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """At most the pool's size over every loop of the process: with a size of 1, a
    loop that holds an idle connection gives it up to a loop that needs one."""
    import jobsys

    monkeypatch.setenv(producers.SIZE_VARIABLE, "1")
    started = threading.Event()
    release = threading.Event()
    peak = 0

    async def idle_loop() -> None:
        await jobsys.defer("rt.sleep", {"tag": "idle"})
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)

    thread = threading.Thread(target=asyncio.run, args=(idle_loop(),))
    thread.start()
    assert started.wait(30)

    async def busy_loop() -> list[int]:
        nonlocal peak
        ids = []
        for n in range(5):
            ids.append(await jobsys.defer("rt.sleep", {"tag": f"busy{n}"}))
            peak = max(peak, producers.open_connections(), backends(db_url))
        calls = (jobsys.defer("rt.sleep", {"tag": f"g{n}"}) for n in range(10))
        ids += await asyncio.gather(*calls)
        peak = max(peak, producers.open_connections(), backends(db_url))
        return ids

    ids = asyncio.run(busy_loop())
    release.set()
    thread.join(30)
    assert len(set(ids)) == 15
    assert peak == 1
    assert count_jobs(db_url) == 16


def test_a_forked_child_leaves_the_parents_loop_pool_alone(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    """A loop's pool survives a fork untouched: the child (async, on its own loop)
    opens its own connection, and the parent's loop keeps deferring on its own."""
    import jobsys

    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(jobsys.defer("rt.sleep", {"tag": "parent-before"}))
        context = multiprocessing.get_context("fork")
        result: multiprocessing.Queue = context.Queue()  # type: ignore[type-arg]
        child = context.Process(target=_defer_in_child, args=(result, True))
        child.start()
        status, value = result.get(timeout=60)
        child.join(30)
        assert status == "ok", value
        assert child.exitcode == 0
        loop.run_until_complete(jobsys.defer("rt.sleep", {"tag": "parent-after"}))
        assert producers.open_connections() == 1
        assert wait_for_backends(db_url, 1) == 1
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
    assert producers.open_connections() == 0
    assert count_jobs(db_url) == 3


async def producer_waits_on_a_lock(db_url: str, timeout: float = 10.0) -> None:
    """Until the producer pool's backend waits for a lock (its statement is running)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        rows = query(
            db_url,
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND application_name = %s AND wait_event_type = 'Lock'",
            (producers.APPLICATION_NAME,),
        )
        if rows[0][0]:
            return
        await asyncio.sleep(0.02)
    raise AssertionError("the producer's statement never waited for the lock")


async def test_a_defer_cancelled_while_its_statement_runs_cancels_it_on_the_server(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    """A caller cancelled mid-insert (a request's timeout) has the server cancel the
    statement, as psycopg does: no job, and the connection comes back idle and is
    reused (the pool's defer statement skips psycopg's cursor: ``jobsys.db.direct``)."""
    import jobsys

    await jobsys.defer("rt.sleep", {"tag": "warm"})
    with psycopg.connect(db_url) as locker:  # holds the lock until it rolls back
        locker.execute("LOCK TABLE procrastinate_jobs IN EXCLUSIVE MODE")
        call = asyncio.ensure_future(jobsys.defer("rt.sleep", {"tag": "cancelled"}))
        await producer_waits_on_a_lock(db_url)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):  # not TimeoutError: it did end
            await asyncio.wait_for(call, 10)
        locker.rollback()
    await jobsys.defer("rt.sleep", {"tag": "after"})
    tags = [row[0] for row in query(db_url, "SELECT args->>'tag' FROM procrastinate_jobs")]
    assert sorted(tags) == ["after", "warm"]
    assert backends(db_url) == 1


@pytest.mark.parametrize("setting", ["", "1"], ids=["default", "prepared"])
async def test_idle_connections_the_server_closed_are_replaced_and_no_defer_fails(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    setting: str,
) -> None:
    """The server ended the pool's idle connections (a restart, ``pg_terminate_backend``,
    ``idle_session_timeout``, a pooler's ``client_idle_timeout``): no statement was sent
    on them, so no defer fails. Each is found closed when taken (its socket has the
    server's goodbye to read) and a new connection is opened in its place (with
    ``JOBSYS_DB_PREPARE``: its defer statement prepared anew). It used to fail one defer
    per pooled connection with ConnectionLost, 'the job may have been inserted'."""
    import jobsys
    from jobsys.db.connect import PREPARE_VARIABLE

    monkeypatch.setenv(PREPARE_VARIABLE, setting)
    producers.close()
    held = asyncio.Event()

    async def hold(conn: psycopg.AsyncConnection) -> None:
        await held.wait()  # three at once: three connections open

    holders = [asyncio.ensure_future(producers.run(db_url, hold)) for _ in range(3)]
    await asyncio.sleep(0.2)
    held.set()
    await asyncio.gather(*holders)
    await jobsys.defer("rt.sleep", {"tag": "warm"})
    assert producers.open_connections() == 3 and backends(db_url) == 3
    query(
        db_url,
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND application_name = %s",
        (producers.APPLICATION_NAME,),
    )
    assert wait_for_backends(db_url, 0) == 0  # gone: their sockets are closed
    for n in range(3):
        await jobsys.defer("rt.sleep", {"tag": f"after{n}"})
    assert backends(db_url) == producers.open_connections() == 1  # the three replaced
    expected = {"jobsys_defer_one": 3} if setting else {}
    assert await producers.run(db_url, prepared_statements) == expected
    await asyncio.gather(*(jobsys.defer("rt.sleep", {"tag": f"c{n}"}) for n in range(5)))
    assert count_jobs(db_url) == 1 + 3 + 5


async def test_producers_behind_a_transaction_mode_pgbouncer(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The pool's defer statement (straight through libpq) is an unnamed statement, as
    psycopg's: several producer connections sharing one server connection through a
    transaction-mode PgBouncer defer every job, and a conflict is still one call's."""
    import jobsys
    from jobsys.db.direct import DirectConnection
    from jobsys.errors import AlreadyQueuedError
    from jobsys.jobs import defer

    def no_cursor(*args: object, **kwargs: object) -> None:
        raise AssertionError("a defer statement went through psycopg's cursor")

    monkeypatch.setattr(DirectConnection, "cursor", no_cursor)
    with pgbouncer(db_url, tmp_path, pool_mode="transaction", pool_size=1) as bouncer_url:
        defer.configure(defer._environment().config, url=bouncer_url)
        try:
            for n in range(20):
                await jobsys.defer("rt.sleep", {"tag": f"s{n}"})
            calls = [jobsys.defer("rt.sleep", {"tag": f"c{n}"}) for n in range(50)]
            calls += [jobsys.defer("rt.sleep", {"tag": t}, queueing_lock="L") for t in "ab"]
            results = await asyncio.gather(*calls, return_exceptions=True)
            await jobsys.defer_many("rt.sleep", [{"tag": f"m{n}"} for n in range(30)])
        finally:
            await producers.aclose()
    assert [type(r) for r in results].count(AlreadyQueuedError) == 1, results
    assert count_jobs(db_url) == 20 + 50 + 1 + 30


@pytest.fixture
async def proxied(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> AsyncIterator[ChaosProxy]:
    """The producer pool defers through a :class:`ChaosProxy` (graceful): one job
    ("warm") deferred, so its connection is open; the pool closes after the test."""
    import jobsys
    from jobsys.jobs import defer

    with ChaosProxy(db_url, graceful=True) as proxy:
        defer.configure(defer._environment().config, url=proxy.url)
        try:
            await jobsys.defer("rt.sleep", {"tag": "warm"})
            yield proxy
        finally:
            await producers.aclose()


@pytest.mark.parametrize("stalled", ["statement_sent", "statement_being_written"])
async def test_a_timed_out_defer_on_a_stalled_connection_ends_within_seconds(
    proxied: ChaosProxy, db_url: str, stalled: str
) -> None:
    """The caller's timeout fires while the connection is stalled (a network that holds
    the old connection's bytes while a new connection, the cancel request, gets
    through): the call ends within the cancellation's bound (5 s, psycopg's), and the
    connection is closed and replaced. It used to wait for the stalled connection with
    no end, its timeout long past: after the statement was sent (for the cancelled
    statement's answer), or while it was still being written (its rest never sent: a
    defer_many of 12 MB)."""
    import jobsys

    proxy = proxied
    with psycopg.connect(db_url) as locker:  # holds the lock until it rolls back
        locker.execute("LOCK TABLE procrastinate_jobs IN EXCLUSIVE MODE")

        async def timed() -> None:
            async with asyncio.timeout(1):
                if stalled == "statement_sent":
                    await jobsys.defer("rt.sleep", {"tag": "stalled"})
                else:
                    big = {"tag": "x" * 60_000}  # within max_args_bytes
                    await jobsys.defer_many("rt.sleep", [big] * 200)

        if stalled == "statement_being_written":
            proxy.freeze_open()
        call = asyncio.ensure_future(timed())
        if stalled == "statement_sent":
            await producer_waits_on_a_lock(db_url)
            proxy.freeze_open()
        done, _ = await asyncio.wait({call}, timeout=10)
        if not done:
            call.cancel()
            await asyncio.wait({call}, timeout=10)
        locker.rollback()
    assert done, "the timed-out defer still waited 10 s after its 1 s timeout"
    with pytest.raises(TimeoutError):
        call.result()
    proxy.pass_()
    await jobsys.defer("rt.sleep", {"tag": "after"})
    assert producers.open_connections() == 1
    tags = [row[0] for row in query(db_url, "SELECT args->>'tag' FROM procrastinate_jobs")]
    assert "after" in tags


@pytest.mark.parametrize("setting", ["", "1"], ids=["default", "prepared"])
@pytest.mark.parametrize("lost", ["backend_terminated", "network_reset"])
async def test_a_connection_lost_mid_defer_says_the_job_may_be_in(
    proxied: ChaosProxy,
    db_url: str,
    lost: str,
    setting: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The connection goes while the defer's statement waits on a lock: the error says
    the connection was lost and the job may have been inserted (not "cannot connect").
    It may indeed: after a network loss the server still commits it once the lock is
    free (the reviewer's 3 jobs for 2 defers that succeeded). The same for the
    statement prepared on the connection (``JOBSYS_DB_PREPARE``): run by name, it is
    not sent again either."""
    import jobsys
    from jobsys.db.connect import PREPARE_VARIABLE
    from jobsys.errors import ConnectionLost

    if setting:
        monkeypatch.setenv(PREPARE_VARIABLE, setting)
        producers.close()  # a new connection, through the proxy, prepares it
        await jobsys.defer("rt.sleep", {"tag": "warm"})
    with psycopg.connect(db_url) as locker:  # holds the lock until it rolls back
        locker.execute("LOCK TABLE procrastinate_jobs IN EXCLUSIVE MODE")
        call = asyncio.ensure_future(jobsys.defer("rt.sleep", {"tag": "lost"}))
        await producer_waits_on_a_lock(db_url)
        if lost == "backend_terminated":
            query(
                db_url,
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND application_name = %s",
                (producers.APPLICATION_NAME,),
            )
        else:
            proxied.reset()
        with pytest.raises(ConnectionLost) as raised:
            await asyncio.wait_for(call, 10)
        locker.rollback()
    proxied.pass_()
    await jobsys.defer("rt.sleep", {"tag": "after"})
    error = raised.value
    assert isinstance(error, DatabaseUnavailable) and error.exit_code == 69
    assert error.message.startswith("lost the connection to the database at "), error
    assert "while deferring" in error.message and "cannot connect" not in error.message
    assert error.hint is not None
    assert "The server may have inserted the job before the connection went" in error.hint
    assert "`jobsys jobs list --task rt.sleep`" in error.hint
    assert "queueing lock or a unique key" in error.hint
    expected = ["after", "warm"] if lost == "backend_terminated" else ["after", "lost", "warm"]
    expected = sorted(expected + (["warm"] if setting else []))
    deadline = asyncio.get_running_loop().time() + 10
    while True:
        tags = sorted(r[0] for r in query(db_url, "SELECT args->>'tag' FROM procrastinate_jobs"))
        if tags == expected or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.05)
    assert tags == expected


def test_a_database_that_cannot_be_reached_is_not_a_lost_connection(
    api_env: dict[str, str],  # noqa: F811
) -> None:
    """Nothing was sent: "cannot connect", and not :class:`ConnectionLost` (whose hint
    says the job may be in)."""
    from jobsys.errors import ConnectionLost

    async def nothing(conn: object) -> None:
        return None

    with pytest.raises(DatabaseUnavailable) as raised:
        asyncio.run(producers.run("postgresql://postgres@127.0.0.1:1/nowhere", nothing))
    assert not isinstance(raised.value, ConnectionLost)
    assert raised.value.message.startswith("cannot connect to the database at ")


def defer_in_thread(
    tag: str, name: str | None = None
) -> tuple[threading.Thread, list[BaseException | int]]:
    """A ``defer_sync`` of job ``tag`` on a thread of its own (started); its outcome (the
    id, or what it raised) lands in the list."""
    import jobsys

    outcome: list[BaseException | int] = []

    def caller() -> None:
        try:
            outcome.append(jobsys.defer_sync("rt.sleep", {"tag": tag}))
        except BaseException as exc:  # reported by the test
            outcome.append(exc)

    thread = threading.Thread(target=caller, name=name, daemon=True)
    thread.start()
    return thread, outcome


def test_close_from_another_thread_ends_a_waiting_sync_defer_with_an_error(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``producers.close()`` while a ``defer_sync`` of another thread waits on a lock:
    close waits a bounded time for the sync loop's defers, then cancels them, and the
    waiting caller gets :class:`ConnectionLost` (it used to stay blocked: its
    connection was closed under it and the loop stopped with its task pending)."""
    import jobsys
    from jobsys.errors import ConnectionLost

    monkeypatch.setattr(producers, "CLOSE_WAIT_SECONDS", 0.5)
    jobsys.defer_sync("rt.sleep", {"tag": "warm"})
    with psycopg.connect(db_url) as locker:  # holds the lock until it rolls back
        locker.execute("LOCK TABLE procrastinate_jobs IN EXCLUSIVE MODE")
        thread, outcome = defer_in_thread("waiting")
        asyncio.run(producer_waits_on_a_lock(db_url))
        closer = threading.Thread(target=producers.close, daemon=True)
        closer.start()
        closer.join(15)
        thread.join(15)
        locker.rollback()
    assert not closer.is_alive(), "producers.close() still waited 15 s later"
    assert not thread.is_alive(), "the defer_sync still waited 15 s after close()"
    assert len(outcome) == 1 and isinstance(outcome[0], ConnectionLost), outcome
    assert "producer pool was closed" in outcome[0].message
    jobsys.defer_sync("rt.sleep", {"tag": "after"})  # a new pool
    tags = sorted(r[0] for r in query(db_url, "SELECT args->>'tag' FROM procrastinate_jobs"))
    assert tags == ["after", "warm"]
    assert wait_for_backends(db_url, 1) == 1


async def test_aclose_lets_a_defer_of_the_same_loop_finish(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    """``await producers.aclose()`` while other defers of the same loop wait on a lock:
    their connections are left to them (closed when they come back), so they end once
    the lock is free."""
    import jobsys

    await jobsys.defer("rt.sleep", {"tag": "warm"})
    with psycopg.connect(db_url) as locker:  # holds the lock until it rolls back
        locker.execute("LOCK TABLE procrastinate_jobs IN EXCLUSIVE MODE")
        calls = [asyncio.ensure_future(jobsys.defer("rt.sleep", {"tag": "waiting"}))]
        await producer_waits_on_a_lock(db_url)
        calls.append(asyncio.ensure_future(jobsys.defer("rt.sleep", {"tag": "other"})))
        await asyncio.sleep(0.2)
        await asyncio.wait_for(producers.aclose(), 15)
        locker.rollback()
        _, pending = await asyncio.wait(calls, timeout=10)
        for call in pending:
            call.cancel()
        await asyncio.wait(calls, timeout=10)
    assert not pending, "a defer still waited 10 s after the lock was free"
    tags = dict(query(db_url, "SELECT id, args->>'tag' FROM procrastinate_jobs"))
    assert [tags[call.result()] for call in calls] == ["waiting", "other"]
    for _ in range(200):  # closed when they came back
        if backends(db_url) == 0:
            break
        await asyncio.sleep(0.05)
    assert backends(db_url) == 0


@pytest.fixture
def slow_connect(monkeypatch: pytest.MonkeyPatch) -> threading.Event:
    """The producer pool takes 0.3 s more to open a connection (so that a test can close
    the pool meanwhile); the event is set once it has begun."""
    connecting = threading.Event()
    real_connect = producers._connect

    async def connect(url: str) -> object:
        connecting.set()
        await asyncio.sleep(0.3)
        return await real_connect(url)

    monkeypatch.setattr(producers, "_connect", connect)
    return connecting


def test_close_lets_a_defer_whose_connection_is_opening_finish(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    slow_connect: threading.Event,
) -> None:
    """``producers.close()`` while a ``defer_sync`` of another thread is opening its
    connection: the defer began before close, so it is written and returns its id, and
    close returns once it is done. It used to fail with "cannot connect to the database
    at ...: the producer pool closed" (the database was fine; the job was lost)."""
    import time

    connecting = slow_connect
    thread, outcome = defer_in_thread("opening")
    assert connecting.wait(10), "the defer never opened a connection"
    started = time.monotonic()
    producers.close()
    took = time.monotonic() - started
    thread.join(15)
    assert not thread.is_alive(), "the defer_sync still waited 15 s after close()"
    assert len(outcome) == 1 and isinstance(outcome[0], int), outcome
    assert took < 3, f"close() took {took:.1f} s for a defer of 0.3 s"
    rows = query(db_url, "SELECT id, args->>'tag' FROM procrastinate_jobs")
    assert [tuple(r) for r in rows] == [(outcome[0], "opening")]
    assert wait_for_backends(db_url, 0) == 0  # closed when the defer returned it


async def test_aclose_lets_a_defer_whose_connection_is_opening_finish(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    slow_connect: threading.Event,
) -> None:
    """The same on an application's loop: ``await producers.aclose()`` while a defer of
    that loop opens its connection. The defer is written and returns its id (it used to
    fail as above); its connection closes when it comes back."""
    import jobsys

    call = asyncio.ensure_future(jobsys.defer("rt.sleep", {"tag": "opening"}))
    while not slow_connect.is_set():
        await asyncio.sleep(0.01)
    await asyncio.wait_for(producers.aclose(), 15)
    job_id = await asyncio.wait_for(call, 15)
    rows = query(db_url, "SELECT id, args->>'tag' FROM procrastinate_jobs")
    assert [tuple(r) for r in rows] == [(job_id, "opening")]
    assert producers.open_connections() == 0


def test_close_returns_once_a_waiting_sync_defer_is_written(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
) -> None:
    """``producers.close()`` while a ``defer_sync`` of another thread waits on a lock that
    is freed 1 s later: close waits for that defer (its job is in, its caller has the
    id) and returns then, not after a fixed wait (``CLOSE_WAIT_SECONDS`` is its bound)."""
    import time

    import jobsys

    jobsys.defer_sync("rt.sleep", {"tag": "warm"})
    with psycopg.connect(db_url) as locker:  # holds the lock until it rolls back
        locker.execute("LOCK TABLE procrastinate_jobs IN EXCLUSIVE MODE")
        thread, outcome = defer_in_thread("waiting")
        asyncio.run(producer_waits_on_a_lock(db_url))
        freer = threading.Timer(1.0, locker.rollback)
        freer.start()
        started = time.monotonic()
        producers.close()
        took = time.monotonic() - started
        freer.join()
    thread.join(15)
    assert len(outcome) == 1 and isinstance(outcome[0], int), outcome
    assert 0.9 < took < producers.CLOSE_WAIT_SECONDS - 1, f"close() took {took:.1f} s"
    tags = dict(query(db_url, "SELECT id, args->>'tag' FROM procrastinate_jobs"))
    assert tags[outcome[0]] == "waiting"
    assert wait_for_backends(db_url, 0) == 0


def test_a_defer_handed_over_as_close_stops_the_loop_goes_to_the_next_pool(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A ``defer_sync`` that found the sync callers' loop just before ``close()`` stopped
    it is written on the next pool. It used to reach the stopped loop: a stray
    ``RuntimeError: Event loop is closed`` (and, handed over between the loop's stop and
    its close, it would never have run: its caller would have waited for ever)."""
    import jobsys

    jobsys.defer_sync("rt.sleep", {"tag": "warm"})  # the sync loop runs
    closed = threading.Event()
    real_current = producers._current
    held: list[bool] = []

    def current() -> producers._Process:
        process = real_current()
        if threading.current_thread().name == "late-caller" and not held:
            held.append(True)
            closed.wait(10)  # the caller holds the old process while close() runs
        return process

    monkeypatch.setattr(producers, "_current", current)
    thread, outcome = defer_in_thread("late", name="late-caller")
    while not held:
        threading.Event().wait(0.01)
    producers.close()
    closed.set()
    thread.join(15)
    assert not thread.is_alive(), "the defer_sync still waited 15 s after close()"
    assert len(outcome) == 1 and isinstance(outcome[0], int), outcome
    tags = dict(query(db_url, "SELECT id, args->>'tag' FROM procrastinate_jobs"))
    assert tags[outcome[0]] == "late"


async def test_a_pool_opened_as_close_runs_belongs_to_the_next_pools(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A loop's first defer that looked the process's pools up just before ``close()``
    (from another thread) took them: its pool is one of the next pools, which the next
    close closes. It used to be added to the closed ones, which nothing closes again: its
    connection stayed open after ``aclose()`` (until its loop ended)."""
    import jobsys

    real_sweep = producers._sweep
    me = threading.current_thread()
    held: list[bool] = []

    def sweep(process: producers._Process) -> None:
        if threading.current_thread() is me and not held:
            held.append(True)  # this loop's first defer: close() runs now
            closer = threading.Thread(target=producers.close, daemon=True)
            closer.start()
            closer.join(15)
        real_sweep(process)

    monkeypatch.setattr(producers, "_sweep", sweep)
    job_id = await jobsys.defer("rt.sleep", {"tag": "late"})
    assert held
    tags = dict(query(db_url, "SELECT id, args->>'tag' FROM procrastinate_jobs"))
    assert tags[job_id] == "late"
    await producers.aclose()
    assert wait_for_backends(db_url, 0) == 0


EXIT_SCRIPT = """
import asyncio
import atexit
import os
import threading
import time

import psycopg

import jobsys

LEFT = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name = 'jobsys-producer'"
)


def left_open() -> None:  # registered first: runs last, once every defer is done
    threads = [t.name for t in threading.enumerate() if t.name.startswith("jobsys-")]
    with psycopg.connect(os.environ["JOBSYS_DATABASE_URL"], autocommit=True) as conn:
        for _ in range(100):  # a connection closed by the client ends soon on the server
            count = conn.execute(LEFT).fetchone()[0]
            if count == 0:
                break
            time.sleep(0.05)
    print("left open:", threads, count)


asked, answered = threading.Event(), threading.Event()


def daemon() -> None:  # a daemon thread that defers while the interpreter exits
    asked.wait()
    try:
        print("daemon thread", jobsys.defer_sync("rt.sleep", {"tag": "daemon"}))
    finally:
        answered.set()


def on_exit() -> None:  # registered at startup: runs after jobsys's own exit handler
    print("exit handler", jobsys.defer_sync("rt.sleep", {"tag": "exit"}))
    many = [{"tag": "exit-many-1"}, {"tag": "exit-many-2"}]
    print("exit handler many", jobsys.defer_many_sync("rt.sleep", many))
    print("exit handler async", asyncio.run(jobsys.defer("rt.sleep", {"tag": "exit-async"})))
    asked.set()
    answered.wait(30)


atexit.register(left_open)
atexit.register(on_exit)
threading.Thread(target=daemon, daemon=True).start()
print("main", jobsys.defer_sync("rt.sleep", {"tag": "main"}))
"""


def run_exit_script(
    tmp_path: Path, text: str, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """``text`` as a script of its own (this checkout's jobsys), ended without error."""
    import sys

    import jobsys

    script = tmp_path / "exit_script.py"
    script.write_text(text)
    # This checkout's jobsys, whichever one the interpreter has installed.
    source = Path(jobsys.__file__).resolve().parents[1]
    env = dict(env, PYTHONPATH=f"{env['PYTHONPATH']}:{source}")
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == "", done.stderr
    return done


def free_port() -> int:
    """A local TCP port nothing listens on (connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def ipv6_loopback_relay(host: str, port: int) -> Iterator[int]:
    """A TCP relay from ``[::1]:<port it yields>`` to the test server: the server as
    an IPv6 loopback address (it listens on 127.0.0.1 only)."""
    try:
        with socket.socket(socket.AF_INET6) as probe:
            probe.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback on this machine")
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    started = threading.Event()

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        finally:
            writer.close()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(host, port)
        await asyncio.gather(
            pipe(reader, up_writer), pipe(up_reader, writer), return_exceptions=True
        )

    async def serve() -> asyncio.Server:
        server = await asyncio.start_server(handle, "::1", 0)
        ready.append(server.sockets[0].getsockname()[1])
        return server

    def run() -> None:
        asyncio.set_event_loop(loop)
        server = loop.run_until_complete(serve())
        started.set()
        loop.run_forever()
        server.close()
        loop.run_until_complete(server.wait_closed())

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    started.wait(10)
    try:
        yield ready[0]
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


@pytest.mark.parametrize("form", ["host name", "two hosts", "PGHOST", "[::1]"])
def test_a_defer_at_exit_after_jobsys_closed_its_pools_is_written(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    tmp_path: Path,
    form: str,
) -> None:
    """An application registers an exit handler at startup, before its first defer
    (which registers jobsys's own): the handler runs after jobsys closed its pools, and
    its defers (``defer_sync``, ``defer_many_sync``, ``await defer`` in ``asyncio.run``)
    and a daemon thread's are each written over a connection of their own, closed at
    once. Nothing is lost and nothing is left open (no pool, no thread, no connection).
    They used to be refused with a UsageError ("defer after the interpreter began
    exiting"): the jobs were lost.

    Every form of address psycopg would resolve in the loop's executor (which refuses
    work once the interpreter exits) is resolved on the calling thread: a host name;
    two hosts, the first refusing connections; a host from ``PGHOST``; the IPv6
    loopback ``[::1]``, which psycopg leaves unresolved (a Windows drive to it): the
    last three used to lose the job ("cannot schedule new futures after interpreter
    shutdown", "cannot connect ...: 'hostaddr'")."""
    parts = urlsplit(db_url)
    if parts.hostname is None and form != "host name":
        # The embedded server is reached over its socket folder (in the URL's query):
        # there is no TCP address to rewrite into these forms. The socket URL itself
        # runs as the "host name" case.
        pytest.skip(f"{form}: the test server is reached over a socket, not TCP")
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    user = f"{parts.username}@" if parts.username else ""
    env = dict(api_env)
    with contextlib.ExitStack() as stack:
        if form == "host name":
            url = db_url.replace(f"@{host}:", "@localhost:")
        elif form == "two hosts":
            url = db_url.replace(f"@{host}:{port}", f"@127.0.0.1:{free_port()},localhost:{port}")
        elif form == "PGHOST":
            url = f"postgresql://{user}{parts.path}"
            env.update(PGHOST="localhost", PGPORT=str(port))
        else:
            relay = stack.enter_context(ipv6_loopback_relay(host, port))
            url = db_url.replace(f"@{host}:{port}", f"@[::1]:{relay}")
        env["JOBSYS_DATABASE_URL"] = url
        done = run_exit_script(tmp_path, EXIT_SCRIPT, env)
    rows = dict(query(db_url, "SELECT args->>'tag', id FROM procrastinate_jobs"))
    assert sorted(rows) == ["daemon", "exit", "exit-async", "exit-many-1", "exit-many-2", "main"]
    assert done.stdout.splitlines() == [
        f"main {rows['main']}",
        f"exit handler {rows['exit']}",
        f"exit handler many {[rows['exit-many-1'], rows['exit-many-2']]}",
        f"exit handler async {rows['exit-async']}",
        f"daemon thread {rows['daemon']}",
        "left open: [] 0",
    ], done.stdout


def test_exit_resolves_every_attempt_and_keeps_sockets() -> None:
    """The conninfo handed to psycopg at exit: an address for every host (an IP literal
    is its own, ``::1`` included), an empty item for a socket folder, ports kept per
    host; no host (libpq's default socket) or a given hostaddr: unchanged."""
    from psycopg.conninfo import conninfo_to_dict

    def lists(url: str) -> tuple[str, str, str]:
        params = conninfo_to_dict(producers._resolved(url))
        return (str(params["host"]), str(params["hostaddr"]), str(params.get("port", "")))

    assert lists("postgresql://u@[::1]:5433/db") == ("::1", "::1", "5433")
    assert lists("postgresql://u@localhost:5433,127.0.0.1:5434/db") == (
        "localhost,127.0.0.1",
        "127.0.0.1,127.0.0.1",
        "5433,5434",
    )
    assert lists("postgresql:///db?host=/tmp,127.0.0.1&port=5433") == (
        "/tmp,127.0.0.1",
        ",127.0.0.1",
        "5433,5433",
    )
    for unchanged in [
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://u@localhost/db?hostaddr=127.0.0.1",
    ]:
        assert producers._resolved(unchanged) == unchanged


BURST_SCRIPT = """
import asyncio
import atexit
import threading

import jobsys

N = 40
peak, live, opening = [0], set(), [0]
guard = threading.Lock()


def on_exit() -> None:  # registered at startup: runs after jobsys's own exit handler
    peak[0] = 0

    async def burst():
        calls = [jobsys.defer("rt.sleep", {"tag": "gather"}) for _ in range(N)]
        return await asyncio.gather(*calls)

    print("gather", len(asyncio.run(burst())))
    asked.set()
    for thread in threads:
        thread.join(60)
    print("threads", len(answered))
    print("peak", peak[0])


atexit.register(on_exit)
from jobsys.db import producers  # noqa: E402  (registers jobsys's exit handler)

real_connect, real_finish = producers._connect, producers._finish


async def counting_connect(url, **options):  # one-shot connections open or opening
    with guard:
        opening[0] += 1
        peak[0] = max(peak[0], opening[0] + len(live))
    try:
        conn = await real_connect(url, **options)
    except BaseException:
        with guard:
            opening[0] -= 1
        raise
    with guard:
        opening[0] -= 1
        live.add(conn)
    return conn


def counting_finish(conn) -> None:
    real_finish(conn)
    with guard:
        live.discard(conn)


producers._connect, producers._finish = counting_connect, counting_finish
asked, answered = threading.Event(), []


def daemon(i: int) -> None:  # daemon threads deferring all at once during exit
    asked.wait()
    answered.append(jobsys.defer_sync("rt.sleep", {"tag": "thread"}))


threads = [threading.Thread(target=daemon, args=(i,), daemon=True) for i in range(N)]
for thread in threads:
    thread.start()
print("main", jobsys.defer_sync("rt.sleep", {"tag": "main"}))
"""


def test_a_burst_of_defers_at_exit_opens_at_most_the_pool_size(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    tmp_path: Path,
) -> None:
    """40 concurrent defers of an exit handler (one loop) and 40 daemon threads'
    ``defer_sync`` at once (a loop each), with ``JOBSYS_PRODUCER_POOL_SIZE=3``: every
    job is written, and at most 3 one-shot connections are open at once. Each used to
    open its own: a burst of 300 exhausted ``max_connections`` (167 of 300 jobs lost,
    "too many clients already") and left the server no slot for anyone else."""
    env = dict(api_env, JOBSYS_DATABASE_URL=db_url, JOBSYS_PRODUCER_POOL_SIZE="3")
    done = run_exit_script(tmp_path, BURST_SCRIPT, env)
    lines = done.stdout.splitlines()
    assert lines[1:3] == ["gather 40", "threads 40"], lines
    peak = int(lines[3].removeprefix("peak "))
    assert 1 <= peak <= 3, lines
    tags = query(db_url, "SELECT args->>'tag', count(*) FROM procrastinate_jobs GROUP BY 1")
    assert dict(tags) == {"main": 1, "gather": 40, "thread": 40}


RACE_SCRIPT = """
import atexit
import os
import threading

import psycopg

import jobsys

LEFT = (
    "SELECT count(*) FROM pg_stat_activity"
    " WHERE datname = current_database() AND application_name = 'jobsys-producer'"
)


def left_open() -> None:  # registered first: runs last
    late.join(30)
    threads = [t.name for t in threading.enumerate() if t.name.startswith("jobsys-")]
    with psycopg.connect(os.environ["JOBSYS_DATABASE_URL"], autocommit=True) as conn:
        count = conn.execute(LEFT).fetchone()[0]
    print("left open:", threads, count)


atexit.register(left_open)
from jobsys.db import producers  # noqa: E402  (registers jobsys's exit handler)

real_current, real_close = producers._current, producers.close
looked, closed = threading.Event(), threading.Event()


def current():
    if threading.current_thread().name == "late" and not looked.is_set():
        looked.set()  # the late defer is about to look its pools up: exit runs now
        closed.wait(30)
    return real_current()


def close() -> None:
    real_close()
    closed.set()


producers._current, producers.close = current, close


def defer_late() -> None:
    print("late", jobsys.defer_sync("rt.sleep", {"tag": "late"}))


print("main", jobsys.defer_sync("rt.sleep", {"tag": "main"}))
late = threading.Thread(target=defer_late, name="late", daemon=True)
late.start()
looked.wait(30)
"""


def test_a_defer_straddling_the_exit_handler_opens_nothing_left_open(
    api_env: dict[str, str],  # noqa: F811
    db_url: str,
    tmp_path: Path,
) -> None:
    """A daemon thread's ``defer_sync`` that began before jobsys's exit handler and
    looks its pools up after it closed them takes the one-shot path: its job is
    written and no pool, thread or connection is left open. It used to open a new
    pool (``jobsys-producer-pool`` thread and connection) that nothing closed."""
    env = dict(api_env, JOBSYS_DATABASE_URL=db_url)
    done = run_exit_script(tmp_path, RACE_SCRIPT, env)
    rows = dict(query(db_url, "SELECT args->>'tag', id FROM procrastinate_jobs"))
    assert done.stdout.splitlines() == [
        f"main {rows['main']}",
        f"late {rows['late']}",
        "left open: [] 0",
    ], done.stdout
