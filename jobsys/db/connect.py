"""Choosing the database and opening connections to it.

Resolution order: ``--database-url`` / ``JOBSYS_DATABASE_URL`` (both land in
``Settings.database_url``), then ``database.url`` in ``queues.yaml``, then the
embedded server under ``JOBSYS_HOME`` (started on demand).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobsys.db import url as db_url
from jobsys.errors import ConnectionLost, DatabaseUnavailable, SchemaError, UsageError

logger = logging.getLogger("jobsys.db.connect")

if TYPE_CHECKING:
    import psycopg

    from jobsys.config import Config
    from jobsys.settings import Settings

CONNECT_TIMEOUT_SECONDS = 10
#: TCP keepalive probes on a worker's connections: an idle connection to a peer that
#: vanished (host down, half-open after a partition) fails within 5 + 2 x 3 = 11 s ...
KEEPALIVES_IDLE_SECONDS = 5
KEEPALIVES_INTERVAL_SECONDS = 2
KEEPALIVES_COUNT = 3
#: ... and data the peer does not acknowledge for this long breaks it (Linux
#: ``TCP_USER_TIMEOUT``), so a write into a dead network cannot hang for minutes.
TCP_USER_TIMEOUT_SECONDS = 10


def bounded_connection_kwargs(connect_timeout_seconds: int) -> dict[str, Any]:
    """libpq parameters that bound how long a worker connection can hang on the
    network (README, "Leases and outages"). Unix-socket connections ignore the TCP ones."""
    return {
        "connect_timeout": connect_timeout_seconds,
        "keepalives": 1,
        "keepalives_idle": KEEPALIVES_IDLE_SECONDS,
        "keepalives_interval": KEEPALIVES_INTERVAL_SECONDS,
        "keepalives_count": KEEPALIVES_COUNT,
        "tcp_user_timeout": TCP_USER_TIMEOUT_SECONDS * 1000,
    }


def driver_options(application_name: str = "jobsys") -> dict[str, Any]:
    """psycopg options of every connection jobsys opens (pool, listener, CLI,
    dashboard, subscriber, migrations).

    ``prepare_threshold=None``: psycopg never prepares statements on the server. By
    default it prepares a query run 5 times as ``_pg3_0``, ``_pg3_1``...; behind a
    transaction-mode pooler (PgBouncer before 1.21, or without
    ``max_prepared_statements``) the next transaction may land on another server
    session where that name exists or does not, and the worker dies with
    ``DuplicatePreparedStatement``. Procrastinate's operations are single function
    calls, so planning each one again costs little.
    """
    return {"prepare_threshold": prepare_threshold(), "application_name": application_name}


#: Where a pooler refused a startup ``options`` parameter (PgBouncer before 1.20, or
#: without the setting in ``track_extra_parameters``): connect there without it.
_OPTIONS_REFUSED: set[str] = set()


def session_options(settings: Mapping[str, int]) -> str:
    """``settings`` (``statement_timeout``, ``lock_timeout``, in ms) as the libpq
    ``options`` startup parameter: ``-c statement_timeout=300000 ...``."""
    return " ".join(f"-c {name}={int(value)}" for name, value in sorted(settings.items()))


async def connect_with_settings(
    connect: Callable[..., Awaitable[Any]],
    conninfo: str,
    settings: Mapping[str, int],
    **kwargs: Any,
) -> Any:
    """``connect(conninfo, **kwargs)`` with ``settings`` (a service's own bounds: a
    ``statement_timeout``, a ``lock_timeout``) sent as startup ``options``.

    Never a session ``SET``: behind a transaction-mode PgBouncer a session ``SET``
    stays on the shared server connection and reaches other clients (and the next
    statement of ours may run on a server connection without it). A startup parameter
    stays with this connection: PostgreSQL applies it to its own session. PgBouncer
    refuses it (1.18: ``options`` altogether; 1.20+: a setting not in its
    ``track_extra_parameters``): then this process connects to that address without
    the settings from then on (logged once), and the pooler's ``query_timeout`` is the
    bound (README, "Connection poolers")."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict

    if not settings or conninfo in _OPTIONS_REFUSED:
        return await connect(conninfo, **kwargs)
    # An explicit ``options`` makes libpq ignore PGOPTIONS: carry it over, so that an
    # operator's search_path (say) still applies to the worker's connections.
    given = (
        kwargs.get("options")
        or conninfo_to_dict(conninfo).get("options")
        or os.environ.get("PGOPTIONS")
        or ""
    )
    ours = session_options(settings)
    try:
        return await connect(conninfo, **{**kwargs, "options": f"{given} {ours}".strip()})
    except psycopg.OperationalError as exc:
        if "startup parameter" not in str(exc):
            raise
    _OPTIONS_REFUSED.add(conninfo)
    logger.info(
        "the server refused the startup parameter options (a pooler): connecting "
        "without %s; the pooler's query_timeout bounds statements",
        ours,
        extra={"action": "startup_options_refused"},
    )
    return await connect(conninfo, **kwargs)


def bounded_connection_class(settings: Mapping[str, int]) -> type[Any]:
    """A psycopg ``AsyncConnection`` class that connects with ``settings`` as startup
    options (:func:`connect_with_settings`), for a connection pool's
    ``connection_class``."""
    import psycopg

    class BoundedConnection(psycopg.AsyncConnection):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any) -> Any:
            return await connect_with_settings(super().connect, conninfo, settings, **kwargs)

    return BoundedConnection


#: Opt-in server-side prepared statements (README "Performance"): only for a direct
#: connection to PostgreSQL, or PgBouncer 1.21+ with ``max_prepared_statements`` set.
PREPARE_VARIABLE = "JOBSYS_DB_PREPARE"
#: With it on, a statement is prepared from its second run (psycopg's LRU of 100 per
#: connection bounds what stays prepared).
PREPARE_THRESHOLD = 1


def prepare_threshold() -> int | None:
    """psycopg's ``prepare_threshold``: None (never prepare, the default) unless
    ``JOBSYS_DB_PREPARE`` is on."""
    import os

    raw = os.environ.get(PREPARE_VARIABLE, "").strip().lower()
    if raw in ("", "0", "off", "false", "no"):
        return None
    if raw in ("1", "on", "true", "yes"):
        return PREPARE_THRESHOLD
    raise UsageError(
        f"{PREPARE_VARIABLE}={raw!r} is neither on nor off.",
        hint=f"Set {PREPARE_VARIABLE}=1 to prepare statements on the server (not behind "
        "a transaction-mode PgBouncer older than 1.21), or unset it.",
    )


@dataclass(frozen=True)
class Target:
    url: str
    #: Where the URL came from, with ``config show``'s words: "flag" (--database-url),
    #: "env" (JOBSYS_DATABASE_URL), "config" (queues.yaml) or "embedded".
    source: str

    @property
    def masked(self) -> str:
        return db_url.mask(self.url)

    @property
    def origin(self) -> str:
        """Where the URL was given, as an operator would look for it."""
        return {
            "flag": "--database-url",
            "env": "JOBSYS_DATABASE_URL",
            "config": "database.url in queues.yaml",
        }.get(self.source, "the embedded server")


def resolve(settings: Settings, config: Config | None = None, *, start: bool = True) -> Target:
    """The database to use; starts the embedded server when nothing else is configured.

    A URL that is not PostgreSQL's (``mysql://...``, a bare host name) is a usage
    error (exit 2) naming the expected form, before any driver sees it."""
    if settings.database_url:
        return _checked(Target(settings.database_url, settings.database_url_source or "env"))
    if config is not None and config.queues.database.url:
        return _checked(Target(config.queues.database.url, "config"))
    from jobsys.db import embedded

    if start and embedded.stopped_by_operator(settings.home):
        st = embedded.status(settings.home)
        if not st.running:
            raise DatabaseUnavailable(
                "the embedded PostgreSQL server was stopped with `jobsys db stop`; "
                "commands do not start it again by themselves.",
                hint="Start it with `jobsys db start` (or `make run`).",
            )
    st = embedded.start(settings.home) if start else embedded.status(settings.home)
    if st.url is None:
        raise DatabaseUnavailable(
            "the embedded PostgreSQL server is not running.",
            hint="Start it with `jobsys db start`.",
        )
    return Target(st.url, "embedded")


def _checked(target: Target) -> Target:
    problem = db_url.form_problem(target.url)
    if problem is None:
        return target
    raise UsageError(
        f"{target.origin}: {target.masked} {problem}.", hint=f"Expected {db_url.EXPECTED_FORM}."
    )


def translate(exc: Exception, url: str) -> DatabaseUnavailable:
    """A driver error as a password-free :class:`DatabaseUnavailable`."""
    detail = db_url.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc), url)
    return DatabaseUnavailable(
        f"cannot connect to the database at {db_url.mask(url)}: {detail}",
        hint=db_url.UNREACHABLE_HINT,
    )


def lost(exc: Exception, url: str, *, during: str, hint: str) -> ConnectionLost:
    """A connection lost after a statement was sent (``during``: what it was doing), as
    a password-free :class:`ConnectionLost`: not "cannot connect", since the server may
    have committed the statement before the connection went (``hint`` says what to
    check)."""
    return ConnectionLost(_lost_message(exc, url, during), hint=hint)


def lost_before_sending(exc: Exception, url: str, *, during: str) -> DatabaseUnavailable:
    """A connection lost before the statement was sent (``during``: what it was doing),
    as a password-free :class:`DatabaseUnavailable`: nothing can have run, so not
    :class:`ConnectionLost` (whose hint says the job may be in)."""
    return DatabaseUnavailable(_lost_message(exc, url, during), hint=db_url.UNREACHABLE_HINT)


def _lost_message(exc: Exception, url: str, during: str) -> str:
    detail = db_url.scrub(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc), url)
    return f"lost the connection to the database at {db_url.mask(url)} {during}: {detail}"


@contextlib.asynccontextmanager
async def connect(
    url: str, *, autocommit: bool = True
) -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """One async connection; connection failures become :class:`DatabaseUnavailable`."""
    import psycopg
    from psycopg.rows import dict_row

    try:
        conn = await psycopg.AsyncConnection.connect(
            url,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            row_factory=dict_row,
            **driver_options(),
        )
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        raise translate(exc, url) from None
    try:
        yield conn
    except psycopg.OperationalError as exc:
        if conn.broken or conn.closed:
            raise translate(exc, url) from None
        raise
    finally:
        await conn.close()


async def revisions(conn: psycopg.AsyncConnection[Any]) -> list[str]:
    """Alembic revisions recorded in the database (empty when no schema is installed)."""
    cur = await conn.execute("SELECT to_regclass('public.alembic_version') AS t")
    row = await cur.fetchone()
    if row is None or row["t"] is None:
        return []
    cur = await conn.execute("SELECT version_num FROM alembic_version ORDER BY version_num")
    return [r["version_num"] for r in await cur.fetchall()]


async def check_schema(conn: psycopg.AsyncConnection[Any]) -> None:
    """Raise :class:`SchemaError` unless the database is at this code's head revision."""
    from jobsys.db.schema import HEAD_REVISION, KNOWN_REVISIONS

    versions = set(await revisions(conn))
    if not versions:
        raise SchemaError(
            "the jobsys schema is not installed in this database.",
            hint="Run `jobsys db upgrade`.",
        )
    if versions == {HEAD_REVISION}:
        return
    if versions - set(KNOWN_REVISIONS):
        raise SchemaError(
            f"the database schema ({', '.join(sorted(versions))}) is newer than this jobsys.",
            hint="Upgrade jobsys, or point it at another database.",
        )
    raise SchemaError(
        f"the database schema is at {', '.join(sorted(versions)) or 'no revision'}, "
        f"this jobsys needs {HEAD_REVISION}.",
        hint="Run `jobsys db upgrade`.",
    )
