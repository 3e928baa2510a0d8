"""Supervision of the background services that run beside the lanes.

A service (``jobsys.app.WorkerService``) that raises is restarted with exponential
backoff. If it fails ``MAX_FAILURES`` times without ever running ``HEALTHY_SECONDS``
in between, it cannot be restored: :class:`ServiceLost` is raised and the worker
exits non-zero, so its supervisor (systemd) restarts the whole process. A broken
service is logged, never silently dropped.

A database that cannot be reached is not the service's failure: it is retried (at
most every ``OUTAGE_RETRY_MAX_SECONDS``) without counting towards ``max_failures``;
the lease (``heartbeat``) decides when an outage has lasted too long (README, "Leases
and outages").
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from typing import Any

from jobsys.engine.worker import wait_or_timeout
from jobsys.errors import DatabaseUnavailable

logger = logging.getLogger("jobsys.lanes.supervisor")

#: While the database is away, a service is restarted at least this often.
OUTAGE_RETRY_MAX_SECONDS = 5.0


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


def database_away(exc: BaseException) -> bool:
    """The database could not be reached (a connection that failed or broke, the
    server shutting down, a pool that cannot connect), not a query that failed."""
    import psycopg

    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DatabaseUnavailable):
            return True
        if isinstance(seen, psycopg.OperationalError):
            state = seen.sqlstate
            if state is None or state.startswith(("08", "57P")):
                return True
        seen = seen.__cause__ or seen.__context__
    return False


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
            if database_away(exc):
                logger.warning(
                    f"service {name}: database unreachable ({type(exc).__name__}); "
                    f"restarting in {min(delay, OUTAGE_RETRY_MAX_SECONDS):g} s",
                    extra={"action": "service_waiting_for_database", "service": name},
                )
                await wait_or_timeout(stop, min(delay, OUTAGE_RETRY_MAX_SECONDS))
                delay = min(delay * 2, backoff.max_seconds)
                continue
            failures += 1
            if failures >= backoff.max_failures:
                logger.error(
                    f"service {name} failed {failures} times "
                    f"(last: {type(exc).__name__}: {exc}): giving up",
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
