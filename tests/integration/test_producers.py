"""``jobsys.defer`` without a connection outside a worker: one process-wide pool
(``jobsys.db.producers``), reused by every call, bounded under concurrency, shared by
threads and event loops, and never the parent's connections in a forked child."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import threading

import psycopg
import pytest
from rt_support import query
from test_defer import api_env  # noqa: F401  (fixture: the API on the test topology)

from jobsys.db import producers
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


def _defer_in_child(result: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    import jobsys

    try:
        result.put(("ok", jobsys.defer_sync("rt.sleep", {"tag": "child"})))
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
