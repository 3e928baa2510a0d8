"""One shape for the background services of a worker process (River's ``runOnce``
services, Oban's plugins): a pass, run every ``interval`` seconds until stopped.

A service subclasses :class:`Periodic` and writes :meth:`Periodic.run_pass`: one pass,
given the app and ``now`` (the host clock, ``jobsys.clock``; tests pass their own),
returning a small result. The loop in :meth:`Periodic.run` is the same for every
service: it counts passes and consecutive errors, logs a failed pass (``<name>_error``
with ``consecutive_errors``) and, after ``max_consecutive_errors`` failures in a row,
raises so the worker's supervisor restarts the service with backoff. A pass logs only
when it did something (that is the pass's business: the loop adds nothing on success).
A service woken by events rather than a clock overrides :meth:`Periodic.wait_next`.
Tests drive :meth:`run_pass` directly instead of sleeping.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from datetime import datetime
from typing import Any

from jobsys import clock

logger = logging.getLogger("jobsys.periodic")


class Periodic(abc.ABC):
    #: The service's name (``WorkerService.name``), in log actions too.
    name: str = "periodic"
    #: Failed passes in a row after which :meth:`run` raises (None: never, log only).
    max_consecutive_errors: int | None = 1
    #: Where a failed pass is logged (a service sets its module's logger).
    log: logging.Logger = logger

    def __init__(self, interval_seconds: float | None = None) -> None:
        self.passes = 0
        self.consecutive_errors = 0
        self.last_result: Any = None
        #: The fixed time between passes (None: the service works it out in
        #: :meth:`interval_seconds`).
        self.interval = interval_seconds
        # Refused here rather than at the first wait: by then one pass has run and the
        # worker would count the TypeError as the service crashing.
        if interval_seconds is None and type(self).interval_seconds is Periodic.interval_seconds:
            raise TypeError(
                f"{type(self).__name__} has no interval: pass interval_seconds to "
                "Periodic.__init__ or override interval_seconds()"
            )

    def interval_seconds(self) -> float:
        """Seconds between the end of one pass and the start of the next: the fixed
        ``interval`` the service was built with. A service whose period changes (the
        scheduler, the live-events flusher) overrides this."""
        assert self.interval is not None  # __init__ refuses a service without one
        return self.interval

    @abc.abstractmethod
    async def run_pass(self, app: Any, now: datetime) -> Any:
        """One pass; its small result (kept as ``last_result``)."""

    async def run(self, app: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                self.last_result = await self.run_pass(app, clock.now())
            except Exception as exc:
                self.consecutive_errors += 1
                self.log.warning(
                    "%s pass failed (%d in a row): %s: %s",
                    self.name,
                    self.consecutive_errors,
                    type(exc).__name__,
                    exc,
                    extra={
                        "action": f"{self.name}_error",
                        "consecutive_errors": self.consecutive_errors,
                    },
                )
                limit = self.max_consecutive_errors
                if limit is not None and self.consecutive_errors >= limit:
                    raise
            else:
                self.passes += 1
                self.consecutive_errors = 0
            await self.wait_next(stop)

    async def wait_next(self, stop: asyncio.Event) -> None:
        """Wait until the next pass is due, or ``stop``: ``interval_seconds()`` after this
        one (a service woken by events, the live-events flusher, waits for them)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.interval_seconds())
