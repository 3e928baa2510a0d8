"""The defer statement prepared on a session that is not the connection's own
(``JOBSYS_DB_PREPARE=1`` set wrongly behind a transaction-mode pooler, or two jobsys
versions in a rolling deploy on one pooled session): no job lost silently, none
written twice, no raw driver error (real PostgreSQL)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from chaos_proxy import ChaosProxy
from rt_support import query
from test_defer import api_env  # noqa: F401  (fixture of proxied)
from test_producers import proxied  # noqa: F401

from jobsys.db import direct, producers
from jobsys.db.direct import DirectConnection
from jobsys.engine import inserts
from jobsys.errors import DatabaseUnavailable


def tags(db_url: str) -> list[str]:
    return sorted(r[0] for r in query(db_url, "SELECT args->>'tag' FROM procrastinate_jobs"))


def one_job(tag: str) -> inserts.NewJobs:
    return inserts.NewJobs([inserts.NewJob(task="t", queue="q1", args={"tag": tag})])


async def test_a_statement_of_another_text_under_the_old_name_is_not_run(db_url: str) -> None:
    """A look-alike statement prepared on the session as ``jobsys_defer_one`` (the name
    0608f51 gave every text: another version's, here one that inserts nothing and
    answers ``{-1}``). The old code took 42P05 as "prepared" and ran it: the caller got
    id -1 and no job was written."""
    async with await DirectConnection.connect(db_url, autocommit=True, prepare_threshold=1) as conn:
        await conn.execute(
            "PREPARE jobsys_defer_one(varchar, varchar, int, text, text, jsonb, timestamptz,"
            " text, text) AS SELECT ARRAY[-1::bigint] AS ids, NULL::void AS announced"
        )
        done = await inserts.insert(conn, one_job("mine"))
    assert done.ids != [-1]
    assert tags(db_url) == ["mine"]


def test_two_texts_never_share_a_name() -> None:
    one, uniform = inserts._DIRECT_STATEMENTS[True], inserts._DIRECT_STATEMENTS[False]
    assert one[1].startswith(b"jobsys_defer_one_") and uniform[1].startswith(
        b"jobsys_defer_uniform_"
    )
    assert direct.statement_name("jobsys_defer_one", one[0] + b" ") != one[1]
    assert direct.statement_name("jobsys_defer_one", one[0]) == one[1]


async def test_a_session_that_forgets_each_statement_it_prepared_gets_them_unprepared(
    db_url: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A transaction-mode pooler hands each round trip to any server session: a
    statement prepared on one is unknown to the next (SQLSTATE 26000 on its run, twice,
    nothing ran). Emulated on a real session by deallocating everything after each
    round trip. The old code raised psycopg's ``InvalidSqlStatementName`` (prepared
    statement ... does not exist); each defer is now written once, sent unprepared,
    with one warning for the process."""
    sent: Callable[[DirectConnection], Awaitable[Any]] = DirectConnection._sent

    async def forgetful(self: DirectConnection) -> Any:
        result = await sent(self)
        self.pgconn.exec_(b"DEALLOCATE ALL")  # the next round trip: another session
        return result

    monkeypatch.setattr(DirectConnection, "_sent", forgetful)
    monkeypatch.setattr(direct, "_shared_session_warned", False, raising=False)
    caplog.set_level(logging.WARNING, logger="jobsys.db.direct")
    for n in range(2):
        async with await DirectConnection.connect(
            db_url, autocommit=True, prepare_threshold=1
        ) as conn:
            for m in range(2):
                await inserts.insert(conn, one_job(f"c{n}j{m}"))
    assert tags(db_url) == ["c0j0", "c0j1", "c1j0", "c1j1"]
    warnings = [r for r in caplog.records if r.__dict__.get("action") == "direct_prepare_forgotten"]
    assert len(warnings) == 1
    assert "unset JOBSYS_DB_PREPARE" in warnings[0].getMessage()


async def test_once_the_session_forgot_a_statement_single_defers_call_the_function(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a session forgot a statement just prepared, the connection prepares
    nothing more; a single defer then goes out as ``DEFER_UNIFORM`` (the function's
    call), not as ``DEFER_ONE``'s text, which unprepared is parsed and planned each time
    and slower than the function (queries.DEFER_ONE). The old code kept choosing
    ``DEFER_ONE`` from ``prepare_threshold`` alone."""
    sent: Callable[[DirectConnection], Awaitable[Any]] = DirectConnection._sent
    fetch: Callable[..., Awaitable[Any]] = DirectConnection.fetch_value
    statements: list[bytes] = []

    async def forgetful(self: DirectConnection) -> Any:
        result = await sent(self)
        self.pgconn.exec_(b"DEALLOCATE ALL")
        return result

    async def recorded(self: DirectConnection, query: bytes, *args: Any) -> Any:
        statements.append(query)
        return await fetch(self, query, *args)

    monkeypatch.setattr(DirectConnection, "_sent", forgetful)
    monkeypatch.setattr(DirectConnection, "fetch_value", recorded)
    monkeypatch.setattr(direct, "_shared_session_warned", True, raising=False)
    async with await DirectConnection.connect(db_url, autocommit=True, prepare_threshold=1) as conn:
        await inserts.insert(conn, one_job("first"))
        assert not conn.prepares()
        await inserts.insert(conn, one_job("second"))
    one, uniform = inserts._DIRECT_STATEMENTS[True][0], inserts._DIRECT_STATEMENTS[False][0]
    assert statements == [one, uniform]
    assert tags(db_url) == ["first", "second"]


@pytest.mark.parametrize("times", [1, 2], ids=["once", "every_time"])
async def test_a_connection_lost_while_preparing_is_not_a_job_that_may_be_in(
    proxied: ChaosProxy,  # noqa: F811
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    times: int,
) -> None:
    """``JOBSYS_DB_PREPARE=1``: a new connection's first defer prepares its statement
    first; the connection goes right then (a TCP reset as soon as it opened). No insert
    can have run. The old code raised ConnectionLost ('the server may have inserted the
    job'). Now the defer is tried once more on a fresh connection; lost again, it is
    DatabaseUnavailable (exit 69) saying nothing was inserted."""
    import jobsys
    from jobsys.db.connect import PREPARE_VARIABLE
    from jobsys.errors import ConnectionLost

    connect = producers._connect
    resets: list[int] = []

    async def cut(url: str) -> Any:
        conn = await connect(url)
        if len(resets) < times:
            resets.append(1)
            proxied.reset()
        return conn

    monkeypatch.setenv(PREPARE_VARIABLE, "1")
    producers.close()  # new connections (through the proxy) prepare the statement
    monkeypatch.setattr(producers, "_connect", cut)
    if times == 1:
        await jobsys.defer("rt.sleep", {"tag": "once"})
        assert tags(db_url) == ["once", "warm"]
        return
    with pytest.raises(DatabaseUnavailable) as raised:
        await jobsys.defer("rt.sleep", {"tag": "never"})
    error = raised.value
    assert not isinstance(error, ConnectionLost) and error.exit_code == 69
    assert error.message.startswith("lost the connection to the database at "), error
    assert "before the defer was sent (nothing was inserted)" in error.message
    assert resets == [1, 1]
    await jobsys.defer("rt.sleep", {"tag": "after"})
    assert tags(db_url) == ["after", "warm"]
