"""libpq's transaction states, by name, for code that must not import psycopg.

``psycopg.pq.TransactionStatus`` holds the same numbers, but importing ``psycopg.pq``
loads psycopg (about 0.1 s), which ``jobsys.db.producers`` and ``jobsys.live.publish``
leave to the first connection. Everything in jobsys that compares a transaction
status compares with these, plain ints (the cheapest compare on the defer path) that
``tests/unit/test_psycopg_api_contract.py`` pins to psycopg's enum; read the status
from a connection's ``pgconn`` (its ``info`` builds two objects per read).
"""

from __future__ import annotations

#: ``PQTRANS_IDLE``: connected, outside a transaction.
PQTRANS_IDLE = 0
#: ``PQTRANS_ACTIVE``: a statement is running.
PQTRANS_ACTIVE = 1
#: ``PQTRANS_INTRANS``: idle inside a transaction block.
PQTRANS_INTRANS = 2
