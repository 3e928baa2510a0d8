"""The process heartbeat and the lease it holds: one beat keeps the process and all its
lanes alive; the lease says how long this process may still run jobs.

Every ``worker.heartbeat_interval_seconds`` the heartbeat updates this process's row
in ``jobsys_worker_processes`` (with its status: running, draining) and the
``procrastinate_workers`` row of every lane, in one statement, on a connection of its
own (not the pool: a pool busy with hung job connections or backing off its
reconnects must not delay a beat). It runs from start until every lane has finished
shutting down, so a worker draining after SIGTERM never looks dead. The reaper's
rule follows: a process whose last beat is older than ``worker.dead_after_seconds``
by the database clock is dead; while it beats, its running jobs are its own.

The lease (README, "Leases and outages"): a beat that succeeded proves the database
stamped ``last_heartbeat`` no earlier than the moment the beat was *sent*, so no
reaper can take this process for dead before ``sent + dead_after`` (real time). This
process may run jobs only until ``sent + dead_after - margin`` on its monotonic
clock, where ``margin`` = one heartbeat interval + a clock-rate allowance
(:class:`Lease`). A guard on its own timer (every ``GUARD_TICK_SECONDS``), not the
beat loop, fences the process the moment the lease runs out, whatever the network
does: a beat that hangs on a frozen socket is abandoned after ``beat_timeout`` and
retried on a fresh connection, every ``RETRY_SECONDS`` while the database is away,
so an outage shorter than the lease's slack is ridden out (README gives the numbers).

Fencing (``on_fenced``; the runtime exits at once with 75, touching no job row, which
the reaper settles): when the lease runs out, or when this process's rows are gone
(another host's reaper took it for dead).

Continuity: :func:`database_continuity` tells the reaper how long this process has
reached the database without a gap. Right after an outage every heartbeat in the
database is stale; a reaper that has itself just reconnected waits one
``dead_after_seconds`` before judging anyone dead, so live workers catch up first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jobsys.engine.worker import wait_or_timeout
from jobsys.lanes import store

logger = logging.getLogger("jobsys.lanes.heartbeat")

#: Clock-rate allowance of the lease: the worker's monotonic clock and the database's
#: may run at rates this far apart (NTP slews at most 0.05 %; 2 % is generous) ...
CLOCK_DRIFT_FRACTION = 0.02
#: ... and never less than this many seconds (also covers the guard's tick).
MIN_CLOCK_DRIFT_SECONDS = 0.25
#: How often the guard compares the lease with the monotonic clock.
GUARD_TICK_SECONDS = 0.1
#: While beats fail, the next one is tried this soon (capped by the interval).
RETRY_SECONDS = 0.5
#: Connecting for a beat may take at most this long (libpq's minimum is 2 s).
CONNECT_TIMEOUT_SECONDS = 2
APPLICATION_NAME = "jobsys-heartbeat"

#: time.monotonic() of this process's first good beat since its last failed one
#: (None: the last beat failed); meaningful only while a heartbeat runs here.
_connected_since: float | None = None
_running = False


def database_continuity() -> float | None:
    """Seconds this process's heartbeat has reached the database without a gap: 0.0
    while it fails, None when no heartbeat runs in this process (CLI, tests)."""
    if not _running:
        return None
    if _connected_since is None:
        return 0.0
    return time.monotonic() - _connected_since


@dataclass
class Lease:
    """How long this process may run jobs, on its monotonic clock (pure, no I/O).

    ``renewed(sent_at)`` after every successful beat, with the time the beat was sent.
    """

    dead_after_seconds: float
    heartbeat_interval_seconds: float
    sent_at: float

    @property
    def margin_seconds(self) -> float:
        drift = max(MIN_CLOCK_DRIFT_SECONDS, CLOCK_DRIFT_FRACTION * self.dead_after_seconds)
        return self.heartbeat_interval_seconds + drift

    @property
    def length_seconds(self) -> float:
        """From a beat's sending to the fence."""
        return self.dead_after_seconds - self.margin_seconds

    @property
    def expires_at(self) -> float:
        return self.sent_at + self.length_seconds

    def renewed(self, sent_at: float) -> None:
        self.sent_at = max(self.sent_at, sent_at)

    def remaining(self, now: float) -> float:
        return self.expires_at - now


class ProcessHeartbeat:
    def __init__(
        self,
        url: str,
        process_id: str,
        interval_seconds: float,
        *,
        dead_after_seconds: float | None = None,
        granted_at: float | None = None,
        on_fenced: Callable[[str], None] | None = None,
    ) -> None:
        """``granted_at``: time.monotonic() just before this process's row was first
        written (its registration is its first beat); ``dead_after_seconds`` None: no
        lease is kept (a reaper-only heartbeat in tests)."""
        self.url = url
        self.process_id = process_id
        self.interval_seconds = interval_seconds
        self.on_fenced = on_fenced
        self.worker_ids: list[int] = []
        self.status = "running"
        self.started = time.monotonic() if granted_at is None else granted_at
        self.lease = (
            None
            if dead_after_seconds is None
            else Lease(dead_after_seconds, interval_seconds, self.started)
        )
        #: A beat may take this long, connecting included, before it is abandoned.
        self.beat_timeout = max(1.0, min(interval_seconds, 5.0))
        self.last_ok: float | None = None  # time.monotonic() of the last good beat
        self.failing = False
        self.fenced = False
        self._conn: Any = None

    def _fence(self, reason: str) -> None:
        if self.fenced:
            return
        self.fenced = True
        if self.on_fenced is not None:
            self.on_fenced(reason)

    async def _connection(self) -> Any:
        import psycopg

        from jobsys.db.connect import (
            bounded_connection_kwargs,
            connect_with_settings,
            driver_options,
        )

        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = await connect_with_settings(
                psycopg.AsyncConnection.connect,
                self.url,
                {"statement_timeout": int(self.beat_timeout * 1000)},
                autocommit=True,
                **driver_options(APPLICATION_NAME),
                **bounded_connection_kwargs(CONNECT_TIMEOUT_SECONDS),
            )
        return self._conn

    def _discard(self) -> None:
        """Forget the connection without waiting on it (it may hang for good)."""
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                conn.pgconn.finish()

    async def _send(self) -> tuple[int, int]:
        conn = await self._connection()
        sent = time.monotonic()
        processes, workers = await store.heartbeat(
            conn, self.process_id, self.worker_ids, self.status
        )
        if self.lease is not None:
            self.lease.renewed(sent)
        return processes, workers

    async def beat(self) -> None:
        """One beat, bounded by ``beat_timeout`` whatever the network does."""
        task = asyncio.create_task(self._send(), name="heartbeat beat")
        done, _ = await asyncio.wait({task}, timeout=self.beat_timeout)
        if not done:
            # A frozen peer: the cancelled beat cleans up in the background (psycopg
            # tries a cancel request first); the next beat uses a fresh connection.
            conn, self._conn = self._conn, None
            task.add_done_callback(lambda t: _finish(t, conn))
            task.cancel()
            raise TimeoutError(f"no answer within {self.beat_timeout:g} s")
        try:
            processes, workers = task.result()
        except Exception:
            self._discard()
            raise
        global _connected_since
        self.last_ok = time.monotonic()
        if _connected_since is None:
            _connected_since = self.last_ok
        if self.failing:
            logger.info("heartbeat restored", extra={"action": "heartbeat_restored"})
            self.failing = False
        # While draining, lanes that finished unregister their own rows: expected.
        if self.status == "running" and (processes == 0 or workers < len(self.worker_ids)):
            # Someone removed our rows while we were alive (a reaper that took us for
            # dead): our running jobs may be recovered elsewhere, so ours must stop.
            logger.error(
                "this worker's process or lane rows are gone from the database; "
                "its running jobs may have been recovered by another process",
                extra={"action": "heartbeat_rows_missing", "workers_found": workers},
            )
            self._fence("its heartbeat rows were removed (taken for dead by a reaper)")

    async def guard(self, stop: asyncio.Event) -> None:
        """Fence the moment the lease runs out: a timer of its own, never blocked by a
        beat that hangs."""
        if self.lease is None:
            return
        while not self.fenced and not await wait_or_timeout(stop, GUARD_TICK_SECONDS):
            now = time.monotonic()
            if self.lease.remaining(now) <= 0:
                self._fence(
                    f"no successful heartbeat for {now - self.lease.sent_at:.1f} s (lease "
                    f"{self.lease.length_seconds:g} s = dead_after "
                    f"{self.lease.dead_after_seconds:g} s - margin "
                    f"{self.lease.margin_seconds:g} s): other hosts may soon recover its jobs"
                )

    async def run(self, stop: asyncio.Event) -> None:
        global _running, _connected_since
        _running, _connected_since = True, None
        guard = asyncio.create_task(self.guard(stop), name="lease guard")
        wait = self.interval_seconds
        try:
            while not await wait_or_timeout(stop, wait):
                try:
                    await self.beat()
                    wait = self.interval_seconds
                except Exception as exc:
                    _connected_since = None
                    wait = min(RETRY_SECONDS, self.interval_seconds)
                    if not self.failing:
                        remaining = (
                            ""
                            if self.lease is None
                            else f"; lease ends in {self.lease.remaining(time.monotonic()):.1f} s"
                        )
                        logger.warning(
                            f"heartbeat failed ({type(exc).__name__}: "
                            f"{_first_line(exc, self.url)}); retrying every {wait:g} s{remaining}",
                            extra={"action": "heartbeat_failed"},
                        )
                    self.failing = True
        finally:
            _running = False
            guard.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await guard
            self._discard()


def _finish(task: asyncio.Task[Any], conn: Any) -> None:
    """An abandoned beat is over: retrieve its outcome, close its connection."""
    if not task.cancelled():
        task.exception()
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.pgconn.finish()


def _first_line(exc: BaseException, url: str) -> str:
    from jobsys.db.url import scrub

    text = str(exc).strip()
    return scrub(text.splitlines()[0], url) if text else type(exc).__name__
