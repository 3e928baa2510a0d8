"""The process heartbeat: one beat keeps the process and all its lanes alive.

Every ``worker.heartbeat_interval_seconds`` it updates this process's row in
``jobsys_worker_processes`` (with its status: running, draining) and the
``procrastinate_workers`` row of every lane, in one statement. It runs from start
until every lane has finished shutting down (so a worker draining after SIGTERM
never looks dead), and it survives a database outage: a failed beat is logged once
and retried at the next tick. The reaper's rule follows: a process whose last beat
is older than ``worker.dead_after_seconds`` is dead; while it beats, its running
jobs are its own.

Fencing (so no job ever runs in two processes at once): when this process's rows are
gone (another host's reaper took it for dead) or it could not beat for
``dead_after_seconds - heartbeat_interval_seconds`` (from now on a reaper may take it
for dead), ``on_fenced`` is called; the runtime then exits at once without touching
its jobs' rows, which the reaper settles.

Continuity: :func:`database_continuity` tells the reaper how long this process has
reached the database without a gap. Right after an outage every heartbeat in the
database is stale; a reaper that has itself just reconnected waits one
``dead_after_seconds`` before judging anyone dead, so live workers catch up first.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from jobsys.engine.worker import wait_or_timeout
from jobsys.lanes import store

logger = logging.getLogger("jobsys.lanes.heartbeat")

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


class ProcessHeartbeat:
    def __init__(
        self,
        pool: Any,
        process_id: str,
        interval_seconds: float,
        *,
        fence_after_seconds: float | None = None,
        on_fenced: Callable[[str], None] | None = None,
    ) -> None:
        self.pool = pool
        self.process_id = process_id
        self.interval_seconds = interval_seconds
        self.fence_after_seconds = fence_after_seconds
        self.on_fenced = on_fenced
        self.worker_ids: list[int] = []
        self.status = "running"
        self.last_ok: float | None = None  # time.monotonic() of the last good beat
        self.started = time.monotonic()
        self.failing = False

    def silent_for(self, now: float) -> float:
        return now - (self.last_ok if self.last_ok is not None else self.started)

    def _fence(self, reason: str) -> None:
        if self.on_fenced is not None:
            self.on_fenced(reason)

    async def beat(self) -> None:
        async with self.pool.connection(timeout=self.interval_seconds) as conn:
            processes, workers = await store.heartbeat(
                conn, self.process_id, self.worker_ids, self.status
            )
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

    async def run(self, stop: asyncio.Event) -> None:
        global _running, _connected_since
        _running, _connected_since = True, None
        try:
            while not await wait_or_timeout(stop, self.interval_seconds):
                try:
                    await self.beat()
                except Exception as exc:
                    _connected_since = None
                    if not self.failing:
                        logger.warning(
                            f"heartbeat failed ({type(exc).__name__}); retrying every "
                            f"{self.interval_seconds:g} s",
                            extra={"action": "heartbeat_failed"},
                        )
                    self.failing = True
                    silent = self.silent_for(time.monotonic())
                    if self.fence_after_seconds is not None and silent >= self.fence_after_seconds:
                        self._fence(
                            f"no heartbeat for {silent:.0f} s: other hosts may now recover its jobs"
                        )
        finally:
            _running = False
