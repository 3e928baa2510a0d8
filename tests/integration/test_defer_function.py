"""Migration 0025's ``jobsys_defer_jobs_v1`` (the insert of every ``defer`` and
``defer_many``) writes what Procrastinate's ``procrastinate_defer_jobs_v1`` writes
(real PostgreSQL): the same job rows, the same ``deferred``/``scheduled`` events, the
same ``job_inserted`` wake-ups, the ids in the order given, the announcement, and a
queueing-lock conflict that inserts nothing; sent through psycopg (any connection) and
straight through libpq (the producer pool's ``DirectConnection``) alike."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from zoneinfo import ZoneInfo

import psycopg
import pytest
from procrastinate.exceptions import AlreadyEnqueued

from jobsys.db.direct import DirectConnection
from jobsys.engine import channels, inserts

DUE = datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)
ROW = (
    "SELECT queue_name, task_name, priority, lock, queueing_lock, args, status::text, "
    "scheduled_at, attempts, abort_requested, worker_id FROM procrastinate_jobs "
    "WHERE id = ANY(%s) ORDER BY id"
)


def procrastinates(conn: Any, jobs: list[inserts.NewJob]) -> list[int]:
    """The same jobs through Procrastinate's own function."""
    row = conn.execute(
        "SELECT procrastinate_defer_jobs_v1(ARRAY(SELECT ROW(q, t, p, l, ql, a::jsonb, s)"
        "::procrastinate_job_to_defer_v1 FROM unnest(%s::text[], %s::text[], %s::int[], "
        "%s::text[], %s::text[], %s::text[], %s::timestamptz[]) WITH ORDINALITY "
        "AS j(q, t, p, l, ql, a, s, n) ORDER BY n))",
        (
            [j.queue for j in jobs],
            [j.task for j in jobs],
            [j.priority for j in jobs],
            [j.lock for j in jobs],
            [j.queueing_lock for j in jobs],
            [json.dumps(j.args) for j in jobs],
            [j.scheduled_at for j in jobs],
        ),
    ).fetchone()
    return [int(i) for i in row[0]]


#: The connection ``ours`` inserts with and its ``prepare_threshold``: psycopg's own, or
#: the producer pool's (whose defer statement skips psycopg's cursor:
#: ``jobsys.db.direct``), by default (never prepare) or with ``JOBSYS_DB_PREPARE`` on
#: (1: a statement prepared once per connection; one job: ``queries.DEFER_ONE``).
CONNECTIONS = [
    pytest.param((psycopg.AsyncConnection, None), id="psycopg"),
    pytest.param((DirectConnection, None), id="direct"),
    pytest.param((DirectConnection, 1), id="direct-prepared"),
]


async def ours(
    db_url: str,
    jobs: list[inserts.NewJob],
    announce: Any = None,
    via: tuple[Any, int | None] = (psycopg.AsyncConnection, None),
) -> list[int]:
    connection_class, threshold = via
    # prepare_threshold: jobsys's own (None: never prepare; psycopg's default prepares).
    async with await connection_class.connect(
        db_url, autocommit=True, prepare_threshold=threshold
    ) as conn:
        done = await inserts.insert(conn, inserts.NewJobs(jobs), announce)
    return done.ids


def written(conn: Any, ids: list[int]) -> tuple[list[tuple[Any, ...]], list[list[str]]]:
    rows = conn.execute(ROW, (ids,)).fetchall()
    by_job: dict[int, list[str]] = {i: [] for i in ids}
    for job_id, kind in conn.execute(
        "SELECT job_id, type::text FROM procrastinate_events WHERE job_id = ANY(%s) ORDER BY id",
        (ids,),
    ).fetchall():
        by_job[job_id].append(kind)
    return rows, [by_job[i] for i in ids]


def batch(count: int, **columns: Any) -> list[inserts.NewJob]:
    return [
        inserts.NewJob("t.defer", "q1", {"n": n, "text": f"é {n}", "items": [n, None]}, **columns)
        for n in range(count)
    ]


@pytest.mark.parametrize(
    ("columns", "count"),
    [
        ({}, 1),
        ({}, 3),
        ({"priority": 5, "lock": "acct-1"}, 1),
        ({"priority": 5, "lock": "acct-1"}, 3),
        ({"scheduled_at": DUE}, 1),
        ({"scheduled_at": DUE}, 3),
        ({"queueing_lock": "only-one"}, 1),  # one waiting job per queueing lock
    ],
)
@pytest.mark.parametrize("via", CONNECTIONS)
async def test_the_function_writes_what_procrastinates_writes(
    db_url: str, columns: dict[str, Any], count: int, via: Any
) -> None:
    jobs = batch(count, **columns)
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN procrastinate_any_queue_v1")
        conn.execute(f'LISTEN "{channels.queue_channel("q1")}"')
        new_ids = await ours(db_url, jobs, via=via)
        assert new_ids == sorted(new_ids) and len(new_ids) == count
        mine = written(conn, new_ids)
        woken_by_ours = sorted(
            (n.channel, json.loads(n.payload)) for n in conn.notifies(timeout=0.5)
        )
        conn.execute("DELETE FROM procrastinate_jobs")
        theirs = written(conn, procrastinates(conn, jobs))
        woken_by_theirs = sorted(
            (n.channel, json.loads(n.payload)) for n in conn.notifies(timeout=0.5)
        )
    assert mine == theirs
    assert [r[5] for r in mine[0]] == [j.args for j in jobs]  # the ids in the order given
    assert [(c, p["type"]) for c, p in woken_by_ours] == [
        (c, p["type"]) for c, p in woken_by_theirs
    ]
    assert woken_by_ours[0][1] == {"type": "job_inserted", "job_id": new_ids[0]}


@pytest.mark.parametrize("via", CONNECTIONS)
async def test_the_function_announces_the_insert_once(db_url: str, via: Any) -> None:
    announce = inserts.Announce("jobsys_test_announce", "jobs_changed")
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("LISTEN jobsys_test_announce")
        one = await ours(db_url, batch(1), announce, via=via)
        many = await ours(db_url, batch(12), inserts.Announce("jobsys_test_announce", "t"), via=via)
        quiet = await ours(db_url, batch(2), via=via)
        got = [json.loads(n.payload) for n in conn.notifies(timeout=0.5)]
    assert got == [
        {"topic": "jobs_changed", "deferred": 1, "ids": one},
        {"topic": "t", "deferred": 12, "ids": many[:10]},
    ]
    assert len(quiet) == 2


@pytest.mark.parametrize("via", CONNECTIONS)
@pytest.mark.parametrize("count", [1, 3])
async def test_the_order_of_a_defers_notifications(db_url: str, via: Any, count: int) -> None:
    """Pinned, not a contract a jobsys listener relies on (none LISTENs on both the
    announcement's channel and a queue's). The function queues the announcement after
    the insert's ``job_inserted`` wake-ups (its INSERT's statement triggers fire at that
    statement's end). ``queries.DEFER_ONE`` (one job, ``JOBSYS_DB_PREPARE``) queues it
    before them: a data-modifying CTE's AFTER triggers fire at the end of the whole
    query, after the outer SELECT's ``pg_notify``. All are delivered at commit."""
    wake_ups = ["procrastinate_queue_v1#q1", "procrastinate_any_queue_v1"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        for channel in [*wake_ups, "jobsys_test_announce"]:
            conn.execute(f'LISTEN "{channel}"')
        await ours(db_url, batch(count), inserts.Announce("jobsys_test_announce", "t"), via=via)
        got = [n.channel for n in conn.notifies(timeout=0.5)]
    prepared_one = via[1] is not None and count == 1
    if prepared_one:
        assert got == ["jobsys_test_announce", *wake_ups]
    else:
        assert got == [*wake_ups, "jobsys_test_announce"]


@pytest.mark.parametrize("via", CONNECTIONS)
async def test_a_queueing_lock_conflict_inserts_nothing(db_url: str, via: Any) -> None:
    await ours(db_url, batch(1, queueing_lock="only-one"), via=via)
    with pytest.raises(AlreadyEnqueued):
        await ours(db_url, batch(1, queueing_lock="only-one"), via=via)
    with psycopg.connect(db_url) as conn:
        assert conn.execute("SELECT count(*) FROM procrastinate_jobs").fetchone() == (1,)


async def test_jobs_that_differ_or_are_too_large_go_through_procrastinates_function(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mixed = [*batch(2), *batch(2, priority=3)]
    assert inserts._defer_params(mixed)[0] == inserts.queries.DEFER_JOBS
    assert inserts._defer_params(batch(2))[0] == inserts.queries.DEFER_UNIFORM
    monkeypatch.setattr(inserts, "UNIFORM_MAX_ARGS_CHARS", 10)
    assert inserts._defer_params(batch(2))[0] == inserts.queries.DEFER_JOBS
    ids = await ours(db_url, mixed)
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(ROW, (ids,)).fetchall()
    assert [(r[2], r[5]) for r in rows] == [(j.priority, j.args) for j in mixed]


#: PostgreSQL's largest jsonb value (bytes; "total size of jsonb array elements exceeds").
JSONB_MAX_BYTES = 268_435_455


def test_the_one_array_path_stays_below_jsonb_size_limit_for_any_args(db_url: str) -> None:
    """UNIFORM_MAX_ARGS_CHARS of JSON text must fit one jsonb value however the args
    inflate when stored; with 64 Mi characters a defer_many of ~700 jobs of 64 KiB
    integer lists (the default per-job limit) failed where Procrastinate's path worked
    (found in review). The worst inflation is measured here, not assumed."""
    shapes = ["1", "[]", "{}", "0.5", '""', "true", "null", '{"a":1}', "[1]"]
    with psycopg.connect(db_url) as conn:
        worst = max(
            conn.execute(
                "SELECT pg_column_size(t::jsonb)::float8 / length(t) "
                "FROM (SELECT '[' || repeat(%s || ',', 100000) || %s || ']' AS t) s",
                (shape, shape),
            ).fetchone()[0]
            for shape in shapes
        )
    assert inserts.UNIFORM_MAX_ARGS_CHARS * worst < JSONB_MAX_BYTES, worst


async def test_the_producer_connection_sends_the_defer_past_psycopgs_cursor(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a ``DirectConnection`` outside a transaction the defer statement goes straight
    through libpq (no cursor), prepared once per connection with ``JOBSYS_DB_PREPARE``
    (one job: ``queries.DEFER_ONE``); an open transaction and values psycopg would
    refuse or send otherwise go through psycopg."""

    def no_cursor(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the defer statement went through psycopg's cursor")

    announce = inserts.Announce("jobsys_test_direct", "jobs_changed")
    async with await DirectConnection.connect(
        db_url, autocommit=True, prepare_threshold=None
    ) as conn:
        monkeypatch.setattr(conn, "cursor", no_cursor)
        done = await inserts.insert(conn, inserts.NewJobs(batch(3, scheduled_at=DUE)), announce)
        assert len(done.ids) == 3 and done.announced
        monkeypatch.undo()
        query, params = inserts._defer_params(batch(1, lock="a\x00b"))
        params.update(channel=None, topic=None)
        assert inserts._direct_params(conn, query, params) is None
        with pytest.raises(psycopg.DataError, match="NUL"):
            await inserts.insert(conn, inserts.NewJobs(batch(1, lock="a\x00b")))
        query, params = inserts._defer_params(batch(1))
        params.update(channel=None, topic=None)
        assert inserts._direct_params(conn, query, params) is not None
        async with conn.transaction():
            assert inserts._direct_params(conn, query, params) is None
    async with await DirectConnection.connect(
        db_url, autocommit=True, prepare_threshold=1
    ) as prepared:
        monkeypatch.setattr(prepared, "cursor", no_cursor)
        for count in (1, 1, 3, 3):
            done = await inserts.insert(prepared, inserts.NewJobs(batch(count)), announce)
            assert len(done.ids) == count
        monkeypatch.undo()
        cur = await prepared.execute(
            "SELECT name, generic_plans + custom_plans FROM pg_prepared_statements ORDER BY 1"
        )
        # Each prepared once and run by name (old code: psycopg's cursor, "_pg3_0").
        assert await cur.fetchall() == [
            (inserts._DIRECT_STATEMENTS[True][1].decode(), 2),
            (inserts._DIRECT_STATEMENTS[False][1].decode(), 2),
        ]


@pytest.mark.parametrize(
    "due",
    [
        DUE.astimezone(timezone(timedelta(hours=5, minutes=30))),
        DUE.astimezone(timezone(-timedelta(hours=3, minutes=30, seconds=17))),
        datetime(1900, 1, 1, tzinfo=ZoneInfo("Asia/Kolkata")),  # LMT: +05:53:28
        DUE.astimezone(timezone(timedelta(hours=1, microseconds=1))),  # through psycopg
    ],
    ids=["+05:30", "-03:30:17", "lmt", "microseconds"],
)
async def test_a_due_time_is_stored_as_the_same_instant_either_way(
    db_url: str, due: datetime
) -> None:
    ids = [
        (await ours(db_url, batch(1, scheduled_at=due), via=via.values[0]))[0]
        for via in CONNECTIONS
    ]
    with psycopg.connect(db_url) as conn:
        stored = conn.execute(
            "SELECT scheduled_at FROM procrastinate_jobs WHERE id = ANY(%s) ORDER BY id", (ids,)
        ).fetchall()
    assert [row[0] for row in stored] == [due] * len(CONNECTIONS)


def test_a_defer_while_another_thread_imports_the_direct_connection(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """While another thread is still importing ``jobsys.db.direct`` (in sys.modules, its
    class not yet defined) a defer on any connection goes through psycopg, instead of
    failing with "partially initialized module" (as ``jobs_changed_channel`` did under
    `jobsys demo run --web`). ``jobsys.engine.inserts`` imports the class itself now: a
    module in sys.modules is never read on the defer path."""
    import sys
    import types

    monkeypatch.setitem(sys.modules, "jobsys.db.direct", types.ModuleType("jobsys.db.direct"))
    query, params = inserts._defer_params(batch(1))
    params.update(channel=None, topic=None)
    assert inserts._direct_params(object(), query, params) is None
