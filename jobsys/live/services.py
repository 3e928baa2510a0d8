"""The live-operations services every ``jobsys worker`` runs beside its lanes.

- :class:`EventFlusher` drains the process's coalescer into NOTIFYs, at most
  ``live.max_notifications_per_second`` per topic.
- :class:`MetricsTicker` publishes ``dashboard_metrics_changed`` every
  ``live.metrics_interval_seconds`` with a few headline numbers.

Each follows the WorkerService shape (``run(app, stop)``); the flusher and the ticker
are :class:`jobsys.periodic.Periodic` services whose pass returns what it sent, so
tests drive a pass instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from jobsys.engine import pool
from jobsys.engine.queries import METRICS_HEADLINE, RECENT_OUTCOMES
from jobsys.live import coalesce, store
from jobsys.periodic import Periodic

if TYPE_CHECKING:
    from jobsys.config import Config

logger = logging.getLogger(__name__)

METRICS_TOPIC = "dashboard_metrics_changed"

OPEN_ISSUE_COUNT = "SELECT count(*) AS open_issues FROM jobsys_issues WHERE status = 'open'"


#: A failed flush is retried after ``interval * 2 ** errors in a row``, at most this.
MAX_FLUSH_BACKOFF_SECONDS = 30.0
#: The last changes of a stopping worker still go out, within this long (best effort).
FINAL_FLUSH_SECONDS = 2.0


class EventFlusher(Periodic):
    """Drains the process's coalescer (``coalesce.shared()``) into NOTIFYs.

    A pass sends what is pending, one NOTIFY per topic in one transaction, and returns
    how many it sent. The next pass waits for a change, then at least
    ``coalesce.SETTLE_SECONDS`` and ``1 / max_per_second`` after the last flush. A
    failed flush puts its changes back and is retried after a backoff (doubling, at
    most ``MAX_FLUSH_BACKOFF_SECONDS``); it never stops the worker. On stop, what is
    pending is flushed once more. Events: ``live_events_error``.
    """

    name = "live_events"
    max_consecutive_errors = None
    log = logger

    def __init__(
        self,
        max_per_second: int,
        *,
        coalescer: coalesce.Coalescer | None = None,
        send: coalesce.Flusher | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.max_per_second = max_per_second
        self.coalescer = coalescer
        self.send = send
        self._clock = clock
        self._last_flush = -float("inf")

    def interval_seconds(self) -> float:
        return 1.0 / self.max_per_second

    async def run(self, app: Any, stop: asyncio.Event) -> None:
        if self.coalescer is None:
            self.coalescer = coalesce.shared()
        if self.send is None:
            self.send = coalesce.connection_sender(pool.of(app))
        self.coalescer.max_per_second = self.max_per_second
        self.coalescer.listen()
        try:
            await self.wait_next(stop)
            await super().run(app, stop)
        finally:
            try:
                await asyncio.wait_for(self.flush(), timeout=FINAL_FLUSH_SECONDS)
            except Exception:
                logger.debug("final live flush failed", exc_info=True)
            self.coalescer.stop_listening()

    async def run_pass(self, app: Any, now: datetime) -> int:
        return await self.flush()

    async def flush(self) -> int:
        assert self.coalescer is not None and self.send is not None, "run() sets them"
        return await self.coalescer.flush_once(self.send)

    async def wait_next(self, stop: asyncio.Event) -> None:
        assert self.coalescer is not None, "run() sets it"
        if self.consecutive_errors:
            backoff = self.interval_seconds() * 2**self.consecutive_errors
            self.coalescer.wake()
            await coalesce.sleep_or_stop(stop, min(MAX_FLUSH_BACKOFF_SECONDS, backoff))
        await self.coalescer.changed(stop)
        if stop.is_set():
            return
        delay = self._last_flush + self.interval_seconds() - self._clock()
        await coalesce.sleep_or_stop(stop, max(coalesce.SETTLE_SECONDS, delay))
        self.coalescer.mark_flushing()
        self._last_flush = self._clock()


class MetricsTicker(Periodic):
    """Publishes the dashboard's headline numbers every ``interval_seconds``; a failed
    tick is logged and the next one tried (it never stops the worker)."""

    name = "live_metrics_tick"
    max_consecutive_errors = None
    log = logger

    def __init__(self, interval_seconds: float) -> None:
        super().__init__(interval_seconds)

    async def run_pass(self, app: Any, now: datetime) -> dict[str, int]:
        async with pool.connection(app) as conn:
            return await self.run_once(conn)

    async def run_once(self, conn: Any) -> dict[str, int]:
        """Read the headline numbers and publish them; return what was published."""
        from jobsys.live.publish import publish

        data: dict[str, int] = {}
        for query in (METRICS_HEADLINE, RECENT_OUTCOMES, OPEN_ISSUE_COUNT):
            row = await store.fetch_one(conn, query)
            data.update({k: int(v or 0) for k, v in (row or {}).items()})
        await publish(conn, METRICS_TOPIC, data)
        return data


def services(config: Config) -> list[Any]:
    """The live services of a worker process (``jobsys.app.worker_services``)."""
    live = config.queues.live
    result: list[Any] = [
        EventFlusher(max_per_second=live.max_notifications_per_second),
        MetricsTicker(interval_seconds=live.metrics_interval_seconds),
    ]
    return result


def middlewares(config: Config) -> list[Any]:
    """The live worker middlewares (``jobsys.app.worker_middlewares``)."""
    from jobsys.live.middleware import live_events

    return [live_events(coalesce.shared())]
