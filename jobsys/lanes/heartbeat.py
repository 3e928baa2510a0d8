"""The process heartbeat: one beat keeps the process and all its lanes alive.

Every ``worker.heartbeat_interval_seconds`` it updates this process's row in
``jobsys_worker_processes`` (with its status: running, draining) and the
``procrastinate_workers`` row of every lane, in one statement. It runs from start
until every lane has finished shutting down (so a worker draining after SIGTERM
never looks dead), and it survives a database outage: a failed beat is logged once
and retried at the next tick. The reaper's rule follows: a process whose last beat
is older than ``worker.dead_after_seconds`` is dead; while it beats, its running
jobs are its own.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from jobsys.lanes import store
from jobsys.lanes.lane import wait_or_timeout

logger = logging.getLogger("jobsys.lanes.heartbeat")


class ProcessHeartbeat:
    def __init__(self, pool: Any, process_id: str, interval_seconds: float) -> None:
        self.pool = pool
        self.process_id = process_id
        self.interval_seconds = interval_seconds
        self.worker_ids: list[int] = []
        self.status = "running"
        self.last_ok: float | None = None  # time.monotonic() of the last good beat
        self.failing = False

    async def beat(self) -> None:
        async with self.pool.connection(timeout=self.interval_seconds) as conn:
            processes, workers = await store.heartbeat(
                conn, self.process_id, self.worker_ids, self.status
            )
        self.last_ok = time.monotonic()
        if self.failing:
            logger.info("heartbeat restored", extra={"action": "heartbeat_restored"})
            self.failing = False
        if processes == 0 or workers < len(self.worker_ids):
            # Someone removed our rows while we were alive (a reaper that took us for
            # dead, Procrastinate pruning): our running jobs may be recovered elsewhere.
            logger.error(
                "this worker's process or lane rows are gone from the database; "
                "its running jobs may have been recovered by another process",
                extra={"action": "heartbeat_rows_missing", "workers_found": workers},
            )

    async def run(self, stop: asyncio.Event) -> None:
        while not await wait_or_timeout(stop, self.interval_seconds):
            try:
                await self.beat()
            except Exception as exc:
                if not self.failing:
                    logger.warning(
                        f"heartbeat failed ({type(exc).__name__}); retrying every "
                        f"{self.interval_seconds:g} s",
                        extra={"action": "heartbeat_failed"},
                    )
                self.failing = True
