"""One statement straight through libpq, on a connection of jobsys's own.

psycopg runs a statement through a cursor object, its query conversion and dumpers,
a chain of generators and a timer per wait: about 70-80 µs of client CPU per
statement on a 2-core machine, as much as the server spends inserting a job. The
producer pool (``jobsys.db.producers``) sends one statement per ``defer``, so its
connections are :class:`DirectConnection`: the engine sends the defer statement with
:meth:`DirectConnection.fetch_value`, which hands the query text and its parameters
(text, already encoded) to libpq's ``PQsendQueryParams``, waits for the socket on the
event loop and reads the one value. On the wire it is what psycopg sends for a
statement with parameters (an unnamed statement of the extended protocol: nothing is
prepared, so PgBouncer in transaction mode sees nothing new); errors are psycopg's own
(``psycopg.errors.error_from_result``: a ``UniqueViolation`` with its ``diag``). Every
other statement on these connections goes through psycopg as usual.

With ``JOBSYS_DB_PREPARE`` on (``psycopg``'s ``prepare_threshold`` set: a direct
connection to PostgreSQL, or PgBouncer 1.21+ with ``max_prepared_statements``), a
statement given a name is prepared once per connection (``PQsendPrepare``) and then
run by that name (``PQsendQueryPrepared``): the server neither parses nor plans it
again. Each name ends in a digest of its text (:func:`statement_name`), so that a
statement of another text (another jobsys version's, on a session shared through a
pooler) never holds it: "already exists" (SQLSTATE 42P05) then means this very text. A
name the server no longer knows (``DISCARD ALL``/``DEALLOCATE`` on the session: SQLSTATE
26000, nothing ran) is prepared again and the statement sent once more; forgotten again
right after it was prepared (the session is not the connection's own: a
transaction-mode pooler), the statement is sent unprepared, as by default, and the
connection prepares nothing more (a warning, once per process).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import select
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import errors, pq

from jobsys.db.libpq import PQTRANS_ACTIVE, PQTRANS_IDLE

if TYPE_CHECKING:
    from psycopg.pq.abc import PGresult

logger = logging.getLogger(__name__)

_UTF8 = b"UTF8"
#: What psycopg stops waiting for on: a cancelled task, Ctrl-C, an exiting process.
_INTERRUPTED = (asyncio.CancelledError, KeyboardInterrupt, SystemExit)
#: How long a cancelled statement's cancel request may take (psycopg's own figure).
_CANCEL_SECONDS = 5.0


#: Set once the warning about a session that forgets what it prepared was logged.
_shared_session_warned = False


def statement_name(prefix: str, query: bytes) -> bytes:
    """The name ``query`` is prepared under: ``prefix`` and 12 hex digits of its text's
    SHA-1, so that two texts never share a name on one session."""
    return f"{prefix}_{hashlib.sha1(query, usedforsecurity=False).hexdigest()[:12]}".encode()


class StatementNotSent(psycopg.OperationalError):
    """The connection was lost before the statement itself was sent (while preparing
    it): nothing of it can have run."""


def _wake(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class DirectConnection(psycopg.AsyncConnection[Any]):
    """An autocommit connection jobsys owns (never in pipeline mode, never LISTENing),
    on which :meth:`fetch_value` may bypass psycopg's cursor machinery."""

    #: The statements this connection prepared (:meth:`fetch_value`'s ``name``).
    _statements: frozenset[bytes] = frozenset()
    #: Set when the session forgot a statement just prepared: nothing is prepared more.
    _unprepared: bool = False
    #: A poll object on the connection's socket (:meth:`server_spoke`), made once.
    _poller: select.poll | None = None

    def server_spoke(self) -> bool:
        """Whether the server sent something (or closed the socket) while this
        connection sat idle: one ``poll`` of the socket, no wait, nothing sent. The
        connection never LISTENs and runs nothing in the background, so a session that
        speaks unasked is ending: a restart's or ``pg_terminate_backend``'s FATAL
        (57P01), ``idle_session_timeout``'s (57P05), then the close, which may arrive
        a moment after the message. Such a connection is not to be used (the pool
        closes it before any statement is sent on it)."""
        poller = self._poller
        if poller is None:
            poller = self._poller = select.poll()
            poller.register(self.pgconn.socket, select.POLLIN)
        return bool(poller.poll(0))

    def prepares(self) -> bool:
        """Whether a ``name``d statement given to :meth:`fetch_value` is prepared:
        ``JOBSYS_DB_PREPARE`` is on and the session has not shown that it forgets what
        was prepared on it (then everything goes unprepared)."""
        return self.prepare_threshold is not None and not self._unprepared

    def direct(self) -> bool:
        """Whether :meth:`fetch_value` may run now: the client encoding is UTF-8 (the
        parameters come encoded), and the connection is outside a transaction."""
        pgconn = self.pgconn
        return (
            pgconn.transaction_status == PQTRANS_IDLE
            and pgconn.parameter_status(b"client_encoding") == _UTF8
        )

    async def fetch_value(
        self, query: bytes, params: Sequence[bytes | None], name: bytes = b""
    ) -> bytes | None:
        """The first column of the first row of ``query`` (``$1``... placeholders) run
        with ``params`` (each the text of a value, or None for NULL), as text; raises
        psycopg's error for the statement's. With ``JOBSYS_DB_PREPARE`` on, a ``name``d
        statement is prepared on the connection's first run and run by name after that.
        Cancelled while the statement runs (a request's timeout), it asks the server to
        cancel it and waits for its end, as psycopg does, so the connection comes back
        idle: at most :data:`_CANCEL_SECONDS`, after which it closes the connection
        (:meth:`_abandon`)."""
        async with self.lock:
            pgconn = self.pgconn
            try:
                if name and self.prepares():
                    first, error = await self._run_prepared(name, query, params)
                else:
                    pgconn.send_query_params(query, params)
                    first, error = await self._sent()
            except _INTERRUPTED:
                if pgconn.transaction_status == PQTRANS_ACTIVE:
                    await self._abandon()
                raise
            except OSError as exc:  # the socket went away under the loop
                raise psycopg.OperationalError("connection socket closed") from exc
        if error is not None:
            raise error
        if first is None or first.status != pq.ExecStatus.TUPLES_OK or not first.ntuples:
            raise psycopg.ProgrammingError("the statement returned no row")
        return first.get_value(0, 0)

    async def _run_prepared(
        self, name: bytes, query: bytes, params: Sequence[bytes | None]
    ) -> tuple[PGresult | None, psycopg.Error | None]:
        """``query`` prepared as ``name`` (once per connection), run by name; sent
        unprepared if the session forgets it twice (nothing ran either time)."""
        pgconn = self.pgconn
        for _ in (1, 2):
            if name not in self._statements:
                error = await self._prepare(name, query)
                # 42P05: already prepared (a prepare cancelled after the server ran it);
                # the name is the text's (statement_name): the same statement.
                if error is not None and error.sqlstate != "42P05":
                    return None, error
                self._statements = self._statements | {name}
            pgconn.send_query_prepared(name, params)
            first, error = await self._sent()
            if error is None or error.sqlstate != "26000":
                return first, error
            # The session forgot it (DISCARD ALL, DEALLOCATE): nothing ran; again.
            self._statements = self._statements - {name}
        # Forgotten right after it was prepared: the session is shared (a pooler).
        self._unprepared = True
        _warn_shared_session()
        pgconn.send_query_params(query, params)
        return await self._sent()

    async def _prepare(self, name: bytes, query: bytes) -> psycopg.Error | None:
        """``query`` prepared as ``name``: the server's error, if any. The connection
        lost meanwhile raises :class:`StatementNotSent` (only the statement's text was
        on its way)."""
        try:
            self.pgconn.send_prepare(name, query)
            _, error = await self._sent()
        except (psycopg.OperationalError, OSError) as exc:
            raise StatementNotSent(str(exc) or type(exc).__name__) from exc
        if error is not None and self.pgconn.status != pq.ConnStatus.OK:
            raise StatementNotSent(str(error)) from error  # a FATAL, then the end
        return error

    async def _sent(self) -> tuple[PGresult | None, psycopg.Error | None]:
        """The results of the statement just sent (flushed first)."""
        pgconn = self.pgconn
        while pgconn.flush():  # only when the socket's buffer was full
            await self._ready(pgconn.socket, write=True)
        return await self._results()

    async def _abandon(self) -> None:
        """The caller stopped waiting mid-statement: have the server cancel it and wait
        for its end (the rest of the statement sent first: it may not all have been
        written), for at most :data:`_CANCEL_SECONDS`, as psycopg does. A cancel
        request that fails, a statement still running after that, or a second
        interruption leave the connection in an unknown state: it is closed (the pool
        then replaces it), never waited on with no end."""
        pgconn = self.pgconn
        try:
            await self.cancel_safe(timeout=_CANCEL_SECONDS)
            async with asyncio.timeout(_CANCEL_SECONDS):
                await self._sent()
        except BaseException as exc:  # the caller's own interruption is re-raised
            logger.warning(
                "defer statement not ended after its cancellation (%s): connection closed",
                type(exc).__name__,
                extra={"action": "direct_cancel_abandoned"},
            )
            pgconn.finish()

    async def _results(self) -> tuple[PGresult | None, psycopg.Error | None]:
        """Every result of the statement sent: the first that is not an error, and the
        first error (psycopg's exception for it)."""
        pgconn = self.pgconn
        first: PGresult | None = None
        error: psycopg.Error | None = None
        while True:
            try:
                while pgconn.is_busy():
                    await self._ready(pgconn.socket)
                    pgconn.consume_input()
            except psycopg.DatabaseError:
                if error is not None:  # the server closed the connection after the error
                    break
                raise
            result = pgconn.get_result()
            if result is None:
                return first, error
            if result.status == pq.ExecStatus.FATAL_ERROR:
                error = error or errors.error_from_result(result, encoding="utf-8")
            elif first is None:
                first = result
        return first, error

    async def _ready(self, fd: int, *, write: bool = False) -> None:
        """Until ``fd`` is readable (or writable): a future the event loop resolves."""
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if write:
            loop.add_writer(fd, _wake, future)
        else:
            loop.add_reader(fd, _wake, future)
        try:
            await future
        finally:
            if write:
                loop.remove_writer(fd)
            else:
                loop.remove_reader(fd)


def _warn_shared_session() -> None:
    global _shared_session_warned
    if _shared_session_warned:
        return
    _shared_session_warned = True
    logger.warning(
        "JOBSYS_DB_PREPARE is on, but the database session forgot a defer statement "
        "just prepared on it: the connection goes through a pooler that shares sessions "
        "(PgBouncer in transaction mode before 1.21, or without max_prepared_statements). "
        "Defers on such connections are sent unprepared; unset JOBSYS_DB_PREPARE there.",
        extra={"action": "direct_prepare_forgotten"},
    )
