"""The psycopg API the producer pool's direct path relies on, pinned (as
``test_engine_api_contract`` pins Procrastinate's): ``jobsys.db.direct`` sends the defer
statement through libpq itself, so a psycopg upgrade that renames, drops or changes any
of it fails here, naming what, instead of at a producer's defer.

Documented: ``AsyncConnection.pgconn``, ``prepare_threshold``, ``cancel_safe`` (3.2),
``closed``/``broken``, the ``psycopg.pq`` module and its enums. Not documented, relied
on: ``AsyncConnection.lock`` (the lock psycopg's own statements take: it keeps a
direct statement and psycopg's apart), ``psycopg.errors.error_from_result`` (psycopg's
exception for a result), and the methods of ``pq.PGconn``/``pq.PGresult`` (the class is
documented, its methods are not, beyond being libpq's functions). Transaction states
are compared with ``jobsys.db.libpq``'s numbers (psycopg is not imported where they are
read first), pinned here to ``TransactionStatus``.
"""

from __future__ import annotations

import inspect

import psycopg
from test_engine_api_contract import missing

MODULE_NAMES: dict[str, tuple[str, ...]] = {
    "psycopg": ("AsyncConnection", "DatabaseError", "Error", "OperationalError"),
    "psycopg.errors": ("error_from_result", "QueryCanceled", "UniqueViolation"),
    "psycopg.pq": ("ExecStatus", "PGconn", "TransactionStatus"),
    "psycopg.pq.abc": ("PGresult",),
}

CLASS_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "psycopg:AsyncConnection": ("prepare_threshold", "cancel_safe", "closed", "broken"),
    "psycopg:Error": ("sqlstate",),
    "psycopg.pq:PGconn": (
        "send_query_params",
        "send_prepare",
        "send_query_prepared",
        "flush",
        "socket",
        "is_busy",
        "consume_input",
        "get_result",
        "transaction_status",
        "parameter_status",
        "finish",
    ),
    "psycopg.pq:PGresult": ("status", "ntuples", "get_value", "error_field"),
}

PARAMETERS: dict[str, tuple[str, ...]] = {
    "psycopg:AsyncConnection.cancel_safe": ("timeout",),
    "psycopg.errors:error_from_result": ("result", "encoding"),
    "psycopg.pq:PGconn.send_query_params": ("command", "param_values"),
    "psycopg.pq:PGconn.send_prepare": ("name", "command"),
    "psycopg.pq:PGconn.send_query_prepared": ("name", "param_values"),
}


def test_every_pinned_psycopg_name_exists() -> None:
    assert missing(MODULE_NAMES, CLASS_ATTRIBUTES, {}, PARAMETERS) == []


def test_the_connection_attributes_set_on_instances() -> None:
    """``pgconn`` and ``lock`` are set in ``__init__`` (psycopg renames the classes'
    module, so their modules' source is read)."""
    from psycopg import _connection_base, connection_async

    assert connection_async.AsyncConnection is psycopg.AsyncConnection
    assert issubclass(psycopg.AsyncConnection, _connection_base.BaseConnection)
    assert "self.pgconn = " in inspect.getsource(_connection_base)
    assert "self.lock = " in inspect.getsource(connection_async)


def test_psycopg_statements_take_the_connection_lock() -> None:
    """A direct statement holds ``AsyncConnection.lock``: psycopg's own statements on the
    same connection must take that lock too, or the two could interleave on the wire."""
    from psycopg import AsyncCursor, connection_async

    assert "async with self.lock" in inspect.getsource(connection_async)  # commit, notifies
    assert "async with self._conn.lock" in inspect.getsource(AsyncCursor.execute)


def test_jobsys_transaction_states_are_psycopgs() -> None:
    """``jobsys.db.libpq`` is the one place jobsys names libpq's transaction states."""
    from psycopg.pq import TransactionStatus

    from jobsys.db import libpq

    assert libpq.PQTRANS_IDLE == TransactionStatus.IDLE
    assert libpq.PQTRANS_ACTIVE == TransactionStatus.ACTIVE
    assert libpq.PQTRANS_INTRANS == TransactionStatus.INTRANS
