"""Supervision of the background services that run beside the lanes.

A service (``jobsys.app.WorkerService``) that raises is restarted with exponential
backoff. If it fails ``MAX_FAILURES`` times without ever running ``HEALTHY_SECONDS``
in between, it cannot be restored: :class:`ServiceLost` is raised and the worker
exits non-zero, so its supervisor (systemd) restarts the whole process. A broken
service is logged, never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from jobsys.engine.worker import wait_or_timeout

logger = logging.getLogger("jobsys.lanes.supervisor")


@dataclass(frozen=True)
class Backoff:
    first_seconds: float = 1.0
    max_seconds: float = 30.0
    max_failures: int = 5
    healthy_seconds: float = 60.0


class ServiceLost(Exception):
    def __init__(self, name: str, failures: int, last: BaseException) -> None:
        super().__init__(
            f"service {name!r} failed {failures} times in a row "
            f"(last: {type(last).__name__}: {last}); giving up"
        )
        self.name = name


async def supervise(service: Any, app: Any, stop: asyncio.Event, backoff: Backoff) -> None:
    name = getattr(service, "name", type(service).__name__)
    failures = 0
    delay = backoff.first_seconds
    while not stop.is_set():
        started = time.monotonic()
        try:
            await service.run(app, stop)
            if not stop.is_set():
                logger.info(
                    f"service {name} finished", extra={"action": "service_done", "service": name}
                )
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if time.monotonic() - started >= backoff.healthy_seconds:
                failures, delay = 0, backoff.first_seconds
            failures += 1
            if failures >= backoff.max_failures:
                logger.error(
                    f"service {name} failed {failures} times: giving up",
                    extra={"action": "service_lost", "service": name},
                    exc_info=exc,
                )
                raise ServiceLost(name, failures, exc) from exc
            logger.error(
                f"service {name} failed ({type(exc).__name__}: {exc}); restarting in {delay:g} s",
                extra={"action": "service_failed", "service": name},
                exc_info=exc,
            )
            await wait_or_timeout(stop, delay)
            delay = min(delay * 2, backoff.max_seconds)
