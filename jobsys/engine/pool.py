"""The one connection pool of a worker process: its size, and how it connects.

Budget per process: ``sum(lane concurrency) + SERVICE_CONNECTIONS`` pooled, plus one
dedicated LISTEN connection, one dedicated heartbeat connection and the search-index
pass's own (``jobsys.jobs.search_index``; see README, "Connection budget").

Every pooled connection is bounded (README, "Leases and outages"): connect timeout,
TCP keepalives and ``tcp_user_timeout`` (``jobsys.db.connect.bounded_connection_kwargs``)
and a ``statement_timeout`` of ``STATEMENT_TIMEOUT_SECONDS`` (a startup parameter, not a
session ``SET``, which a transaction-mode PgBouncer would hand to other clients), so no
fetch or outcome write can hang for good on a dead network or a lock.

Pool connections are **autocommit** and are **not checked** on every checkout: each
of Procrastinate's operations is one statement (a function call), so an implicit
transaction only costs a BEGIN and a COMMIT round trip, and the check one more;
dropping them makes a job's fetch and finish one round trip each. A connection
broken by a server restart fails once and is discarded; the lane runner retries.
Code that needs several statements to be atomic opens ``conn.transaction()``.

Outside the engine, the pool of a running App is reached only through :func:`of` and
:func:`connection` (the connector's ``pool`` is Procrastinate's attribute).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable
from typing import Any

from jobsys.config import LaneSpec
from jobsys.db.connect import (
    bounded_connection_class,
    bounded_connection_kwargs,
    connect_with_settings,
    driver_options,
)

#: Services (scheduler, reaper, ...) and the CLI-side work of a process (the
#: heartbeat has its own connection).
SERVICE_CONNECTIONS = 2
#: Waiting longer than this for a pool connection is an outage, not contention.
POOL_TIMEOUT_SECONDS = 10.0
APPLICATION_NAME = "jobsys"
#: No pooled statement runs longer (Procrastinate's fetch and finish take
#: milliseconds; jobsys's batch tasks commit in batches well under this).
STATEMENT_TIMEOUT_SECONDS = 300
#: libpq connect timeout of a pooled connection.
CONNECT_TIMEOUT_SECONDS = 5


def pool_size(lanes: Iterable[LaneSpec]) -> int:
    return sum(lane.concurrency for lane in lanes) + SERVICE_CONNECTIONS


def connector(url: str, *, min_size: int, max_size: int) -> Any:
    """A Procrastinate psycopg connector with autocommit, unchecked pool connections."""
    import procrastinate

    class FastPsycopgConnector(procrastinate.PsycopgConnector):
        async def _create_pool(self, pool_args: dict[str, Any]) -> Any:
            # Procrastinate passes check=AsyncConnectionPool.check_connection: one
            # more round trip per query. We accept a failure on a stale connection.
            return self._pool_factory(**pool_args, open=False)

    return FastPsycopgConnector(
        conninfo=url,
        min_size=min(min_size, max_size),
        max_size=max_size,
        timeout=POOL_TIMEOUT_SECONDS,
        # Not kwargs={"autocommit": True}: Procrastinate's own LISTEN connection passes
        # autocommit=True itself, and a duplicate keyword breaks it.
        configure=_autocommit,
        # The statement bound as a startup parameter, never a session SET: behind a
        # transaction-mode PgBouncer a SET would reach other clients.
        connection_class=bounded_connection_class(
            {"statement_timeout": STATEMENT_TIMEOUT_SECONDS * 1000}
        ),
        kwargs={
            **driver_options(APPLICATION_NAME),
            **bounded_connection_kwargs(CONNECT_TIMEOUT_SECONDS),
        },
    )


async def _autocommit(conn: Any) -> None:
    await conn.set_autocommit(True)


def of(app: Any) -> Any:
    """The connection pool (psycopg ``AsyncConnectionPool``) of an open Procrastinate
    ``App``: the one place outside Procrastinate that reads its ``connector.pool``."""
    return app.connector.pool


async def dedicated_connection(
    app: Any, application_name: str, settings: dict[str, int] | None = None
) -> Any:
    """A new autocommit connection to the database of ``app``'s pool, outside the pool,
    for a background service that must never take or wait for one of the connections
    the lanes claim with (the search-index pass). Bounded on the network as the pool's
    are; ``settings`` (its ``statement_timeout``, ``lock_timeout`` in ms) are sent as
    startup options (``jobsys.db.connect.connect_with_settings``). The caller closes it."""
    import psycopg

    return await connect_with_settings(
        psycopg.AsyncConnection.connect,
        of(app).conninfo,
        settings or {},
        autocommit=True,
        **driver_options(application_name),
        **bounded_connection_kwargs(CONNECT_TIMEOUT_SECONDS),
    )


@contextlib.asynccontextmanager
async def connection(app: Any, *, timeout: float | None = None) -> AsyncIterator[Any]:
    """A connection borrowed from ``app``'s pool for the block (autocommit, see the
    module docstring); ``timeout``: seconds to wait for one (default
    ``POOL_TIMEOUT_SECONDS``)."""
    async with of(app).connection(timeout=timeout) as conn:
        yield conn
