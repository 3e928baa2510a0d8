"""The search-index pass: keeps ``jobsys_job_search`` (the redacted args text of every
job, trigram-indexed, migration 0021) filled off the producers' path.

A defer writes nothing there (an insert trigger halved ``defer_many``). Instead every
worker process runs :class:`SearchIndexer`: each pass copies the jobs above the cursor
(``jobsys_job_search_state.indexed_up_to``) in batches, oldest first, and moves the
cursor past them. ``jobs list --arg-contains`` uses the index for the jobs at or below
the cursor and filters the newer ones row by row (``jobsys.jobs.browser``), so its
results are exact whatever the lag; the lag only costs search time.

A job id is handed out before its transaction commits, so the cursor never passes an
id that an open transaction could still commit: a pass records the highest id handed
out (``pending_up_to``) and then the running transactions (``pending_snapshot``, and
the ``pending_writers`` holding the job table's write lock: a producer that has drawn
its id but not yet written its row has no xid to be in a snapshot), and a later pass
copies up to it only when none of those is still running. A job is thus
indexed one to two passes after it is deferred. Only one worker's pass copies at a time
(the state row is locked SKIP LOCKED); the others find nothing to do.

The pass never gets in the lanes' way: it runs on a connection of its own, not the
worker's pool (the lanes claim through it), in short autocommit statements with a
``lock_timeout``; the jobs it copies are locked ``FOR KEY SHARE`` only for the batch's
statement, which neither a claim nor a bulk cancel waits for or skips (both lock
``FOR NO KEY UPDATE``, ``jobsys.engine.queries.CLAIM_JOBS``).

The text is redacted in SQL (migration 0021's ``jobsys_redacted_args_text``, the rule
of ``jobsys.failures.redaction.Redactor``) with the keys of the state row: the defaults
of ``redaction.keys`` plus any a worker's configuration adds (a key added sets the
cursor back to 0, so every text is written again with it). The search re-checks every
candidate on the args redacted with the configured keys anyway.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobsys.db.query import execute, fetch_one
from jobsys.engine import queries
from jobsys.periodic import Periodic

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.engine.api import App

logger = logging.getLogger("jobsys.jobs.search_index")

INTERVAL_SECONDS = 5.0
#: Jobs copied per statement (about 0.5-1 s of work at this size on a small machine).
BATCH = 5_000
#: Batches per pass at most: a backlog (the first pass after the upgrade on a big
#: table) is worked off over several passes, never in one long burst.
MAX_BATCHES = 20
#: The pass's own connection (never one of the lanes' pool): its name in
#: ``pg_stat_activity``, and the bounds of what it may wait for. A batch waits for a
#: job row locked ``FOR UPDATE`` (a bulk delete's chunk, the reaper): at most
#: ``LOCK_TIMEOUT_MS``, then the pass gives up until the next one.
APPLICATION_NAME = "jobsys-search-index"
LOCK_TIMEOUT_MS = 2_000
STATEMENT_TIMEOUT_MS = 60_000


@dataclass
class IndexResult:
    copied: int = 0
    indexed_up_to: int = 0
    #: False when the last recorded stretch still waits for a running transaction.
    settled: bool = True
    #: True when the pass gave up on a job row locked longer than ``LOCK_TIMEOUT_MS``.
    lock_waited: bool = False


async def index_pass(
    conn: Any,
    *,
    keys: tuple[str, ...] = (),
    batch: int = BATCH,
    max_batches: int = MAX_BATCHES,
) -> IndexResult:
    """One pass on an autocommit connection: copy what is settled, then record the next
    stretch once the current one is copied. ``keys``: the worker's redacted keys
    (normalised); one the state lacks is added and every job's text written again."""
    if keys:
        await execute(conn, queries.SEARCH_KEYS, {"keys": list(keys)})
    state = await fetch_one(conn, queries.SEARCH_SETTLED)
    if state is None:
        return IndexResult()
    result = IndexResult(indexed_up_to=state["indexed_up_to"], settled=state["settled"])
    upto = state["pending_up_to"] if state["settled"] else None
    for _ in range(max_batches):
        if upto is None or result.indexed_up_to >= upto:
            break
        row = await fetch_one(conn, queries.SEARCH_INDEX_BATCH, {"upto": upto, "batch": batch})
        if row is None:  # another worker's pass holds the state row
            return result
        result.copied += row["copied"]
        result.indexed_up_to = row["indexed_up_to"]
    if result.settled and (upto is None or result.indexed_up_to >= upto):
        high = await fetch_one(conn, queries.SEARCH_HIGH_WATER)
        await execute(conn, queries.SEARCH_PENDING, {"high": high["high"] if high else 0})
    return result


def configured_keys(config: Config) -> tuple[str, ...]:
    """``redaction.keys`` as the SQL redaction compares them (lower case, ``_`` for
    ``-``, as ``Redactor`` does)."""
    return tuple(sorted({k.lower().replace("-", "_") for k in config.queues.redaction.keys}))


async def search_cursor(conn: Any, reader_keys: tuple[str, ...] | None = None) -> int:
    """The cursor: every job at or below it has its search row (0 before any pass).

    With ``reader_keys`` (the searching process's ``redaction.keys``): 0 also when the
    side text redacts a key none of them is part of (a configuration that replaced the
    default keys): that text hides values the reader shows, so the index could miss a
    match, and every job is read row by row instead."""
    row = await fetch_one(conn, queries.SEARCH_CURSOR)
    if row is None:
        return 0
    if reader_keys is not None:
        needles = {k.lower().replace("-", "_") for k in reader_keys}
        if not all(any(n in key for n in needles) for key in row["keys"]):
            return 0
    return int(row["indexed_up_to"])


class SearchIndexer(Periodic):
    """WorkerService: the search-index pass every ``interval_seconds``.

    The pass runs on a connection of its own (``APPLICATION_NAME``, opened at the first
    pass and kept; a broken one is replaced at the next), never on the worker's pool:
    the pool is the lanes' claims and outcomes, and a pass of up to ``MAX_BATCHES``
    statements must not keep a claim waiting for a connection. A pass that waits
    longer than ``LOCK_TIMEOUT_MS`` for a job's row lock gives up until the next pass
    (logged, not an error)."""

    name = "search_index"
    log = logger

    def __init__(self, config: Config, *, interval_seconds: float = INTERVAL_SECONDS) -> None:
        super().__init__(interval_seconds)
        self.keys = configured_keys(config)
        self._conn: Any = None

    async def run(self, app: Any, stop: asyncio.Event) -> None:
        try:
            await super().run(app, stop)
        finally:
            await self.close()

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                await conn.close()

    async def connection(self, app: App) -> Any:
        """The pass's own autocommit connection, to the database of ``app``'s pool."""
        from jobsys.engine.pool import dedicated_connection

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await dedicated_connection(
                app,
                APPLICATION_NAME,
                {"lock_timeout": LOCK_TIMEOUT_MS, "statement_timeout": STATEMENT_TIMEOUT_MS},
            )
        return self._conn

    async def run_pass(self, app: App, now: datetime) -> IndexResult:
        import psycopg

        conn = await self.connection(app)
        try:
            result = await index_pass(conn, keys=self.keys)
        except psycopg.errors.LockNotAvailable:
            logger.info(
                "search index: a job row stayed locked over %s ms; the next pass goes on",
                LOCK_TIMEOUT_MS,
                extra={"action": "search_index_lock_wait"},
            )
            return IndexResult(settled=False, lock_waited=True)
        except psycopg.OperationalError:
            await self.close()
            raise
        if result.copied:
            logger.info(
                "search index: %s jobs copied, indexed up to job %s",
                result.copied,
                result.indexed_up_to,
                extra={"action": "search_index", **vars(result)},
            )
        return result
