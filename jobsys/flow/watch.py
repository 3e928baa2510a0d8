"""A worker process's view of the pauses on its queues, kept fresh by NOTIFY.

The claim itself skips paused queues (``jobsys.engine.queries.NOT_PAUSED`` inside the
claim), so a pause is honoured at the next claim whether or not this process heard
of it. What the watch adds is promptness the other way round: an idle lane waits for
a NOTIFY of a new job or for its poll, and neither comes when a queue is resumed or
a ``--for`` pause runs out. The watch wakes the lanes of a queue the moment it is
resumed (from the notification) and when its pause ends by itself (it sleeps until
the earliest end), and logs every change once, for whoever reads the worker's log.

Shape: :meth:`PauseWatch.run_once` (one read, returns when to look again) wrapped
by :meth:`PauseWatch.run` (waits for a notification, that time, or the poll).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from jobsys.engine import pool
from jobsys.flow import store
from jobsys.flow.limits import RATE_MARGIN_SECONDS, UNMARKED_PAD_SECONDS
from jobsys.flow.service import why_paused

logger = logging.getLogger("jobsys.flow")

#: Wake a little after a pause's end, so the claim (by the database's clock) sees it over.
EXPIRY_SLACK_SECONDS = 0.05


class PauseWatch:
    def __init__(
        self,
        pool: Any,
        queues: list[str],
        *,
        wake: Callable[[list[str]], None],
        poll_interval_seconds: float,
    ) -> None:
        self.pool = pool
        self.queues = list(queues)
        self.wake = wake
        self.poll_interval_seconds = poll_interval_seconds
        #: Pauses in effect on this process's queues at the last read, by queue.
        self.paused: dict[str, dict[str, Any]] = {}
        self._changed = asyncio.Event()
        self._healthy = True

    def notified(self, action: str, queues: list[str]) -> None:
        """A pause or resume was committed (NOTIFY on :data:`store.CHANNEL`)."""
        mine = [q for q in queues if q in self.queues]
        if not mine:
            return
        if action == "resume":
            self.wake(mine)  # no need to wait for the read: the claim decides anyway
        self._changed.set()

    def reconnected(self) -> None:
        """The LISTEN connection was lost and is back: notifications may have been missed."""
        self._changed.set()

    async def run_once(self, conn: Any) -> float | None:
        """Read the pauses; wake the lanes of queues no longer paused; return the
        seconds until the earliest pause ends by itself (None: none does)."""
        rows = {r["queue"]: r for r in await store.active_pauses(conn, self.queues)}
        for queue in sorted(rows.keys() - self.paused.keys()):
            logger.info(
                f"{queue}: {why_paused(rows[queue])}; its jobs wait",
                extra={"action": "queue_paused", "queue": queue},
            )
        resumed = sorted(self.paused.keys() - rows.keys())
        for queue in resumed:
            logger.info(f"queue {queue} resumed", extra={"action": "queue_resumed", "queue": queue})
        self.paused = rows
        if resumed:
            self.wake(resumed)
        ends = [r["remaining_seconds"] for r in rows.values() if r["remaining_seconds"] is not None]
        return max(min(ends), 0.0) + EXPIRY_SLACK_SECONDS if ends else None

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._changed.clear()
            timeout = self.poll_interval_seconds
            try:
                async with self.pool.connection() as conn:
                    next_end = await self.run_once(conn)
                if next_end is not None:
                    timeout = min(timeout, next_end)
                self._healthy = True
            except Exception as exc:
                if self._healthy:
                    logger.warning(
                        f"cannot read queue pauses ({type(exc).__name__}); retrying "
                        f"every {self.poll_interval_seconds:g} s (claims still honour them)",
                        extra={"action": "pause_watch_failed"},
                    )
                self._healthy = False
            waits = [
                asyncio.ensure_future(self._changed.wait()),
                asyncio.ensure_future(stop.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in waits:
                    task.cancel()


#: Start records being written while their jobs run (kept until done).
_MARKING: set[asyncio.Task[None]] = set()


async def start_middleware(call_next: Any, context: Any, worker: Any) -> Any:
    """Innermost worker middleware: a job claimed under a rate waits for its planned
    start, and its start in the ledger moves from its claim to when it really starts
    (jobsys.flow.store.MARK_START), so later claims count windows from real starts (a
    job whose start was delayed cannot squeeze the next window). A job on time (late by
    less than the pad its claim recorded) starts at once and the record is written
    beside it; a later one is recorded first. Failing to record it is logged; the claim
    time then stands."""
    rated = getattr(worker, "rated_ids", None)
    job_id = context.job.id
    if rated is not None and job_id in rated:
        # Claimed ahead of its window (RATE_LEAD_SECONDS at most): start on time.
        not_before, rtt = rated.pop(job_id)
        await asyncio.sleep(max(not_before - time.monotonic(), 0.0))
        late = max(time.monotonic() - not_before, 0.0) + rtt
        if late < UNMARKED_PAD_SECONDS:
            task = asyncio.create_task(_mark(worker, job_id, late))
            _MARKING.add(task)
            task.add_done_callback(_MARKING.discard)
        else:
            await _mark(worker, job_id, None)
    return await call_next()


async def _mark(worker: Any, job_id: int, late: float | None) -> None:
    try:
        async with pool.connection(worker.app) as conn:
            await store.mark_start(
                conn, job_id, pad=UNMARKED_PAD_SECONDS, slack=RATE_MARGIN_SECONDS / 2, late=late
            )
    except Exception as exc:
        logger.warning(
            f"could not record the start of job {job_id} ({type(exc).__name__}); "
            "its claim time stands",
            extra={"action": "flow_start_unrecorded", "job_id": job_id},
        )
