"""One LISTEN connection per worker process, re-established after it is lost.

Procrastinate NOTIFYs its per-queue channel (``jobsys.engine.channels``) on every
job insert and abort request. Each lane's Worker would open its own listener, and in 3.10 a lost
one stays lost after a server restart (the worker silently degrades to polling).
Here one connection listens for every selected queue, hands each notification to
the lane serving that queue, and reconnects with capped exponential backoff; after a
reconnect every lane is woken once, since inserts made while deaf were not heard.
Polling (``worker.poll_interval_seconds``) remains the safety net throughout. The
same connection hears queue pauses and resumes (``jobsys.flow.store.CHANNEL``).

:meth:`Listener.round_trip` checks at start that a NOTIFY sent through the pool
reaches this connection: behind a transaction-mode pooler it does not, and the
runtime says so loudly and relies on polling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import Callable
from typing import Any

from jobsys.db.connect import driver_options
from jobsys.engine import channels
from jobsys.engine.worker import wait_or_timeout

logger = logging.getLogger("jobsys.lanes.listener")

APPLICATION_NAME = "jobsys-listener"
CONNECT_TIMEOUT_SECONDS = 5
RECONNECT_MIN_SECONDS = 0.2
RECONNECT_MAX_SECONDS = 10.0
#: How long a LISTEN connection may sit without traffic before we ping it.
IDLE_PING_SECONDS = 1.0
ROUND_TRIP_TIMEOUT_SECONDS = 3.0


class Listener:
    def __init__(
        self,
        url: str,
        queues: list[str],
        *,
        on_job_inserted: Callable[[str], None],
        on_abort_requested: Callable[[str, int], None],
        on_reconnected: Callable[[], None],
        on_pauses_changed: Callable[[str, list[str]], None] | None = None,
        pauses_channel: str | None = None,
    ) -> None:
        self.url = url
        self.queues = queues
        self.on_job_inserted = on_job_inserted
        self.on_abort_requested = on_abort_requested
        self.on_reconnected = on_reconnected
        self.on_pauses_changed = on_pauses_changed
        #: The channel queue pauses are announced on (``jobsys.flow``), when listened to.
        self.pauses_channel = pauses_channel
        self.connected = asyncio.Event()
        self.backend_pid: int | None = None
        self.reconnects = 0
        self._probe_channel = f"jobsys_probe_{secrets.token_hex(6)}"
        self._probe_heard = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Listen until ``stop``; connection errors are retried forever with backoff."""
        import psycopg

        from jobsys.db.connect import bounded_connection_kwargs

        delay = RECONNECT_MIN_SECONDS
        ever_connected = False
        while not stop.is_set():
            try:
                conn = await psycopg.AsyncConnection.connect(
                    self.url,
                    autocommit=True,
                    **driver_options(APPLICATION_NAME),
                    **bounded_connection_kwargs(CONNECT_TIMEOUT_SECONDS),
                )
            except psycopg.OperationalError as exc:
                logger.warning(
                    f"cannot open the LISTEN connection ({_first_line(exc, self.url)}); "
                    f"retrying in {delay:.1f} s, polling meanwhile",
                    extra={"action": "listener_connect_failed"},
                )
                await wait_or_timeout(stop, delay)
                delay = min(delay * 2, RECONNECT_MAX_SECONDS)
                continue
            try:
                async with conn:
                    await self._listen(conn)
                    self.backend_pid = conn.info.backend_pid
                    self.connected.set()
                    delay = RECONNECT_MIN_SECONDS
                    if ever_connected:
                        self.reconnects += 1
                        logger.info(
                            "LISTEN connection re-established",
                            extra={"action": "listener_restored", "backend_pid": self.backend_pid},
                        )
                        self.on_reconnected()
                    ever_connected = True
                    await self._pump(conn, stop)
            except psycopg.OperationalError as exc:
                logger.warning(
                    f"LISTEN connection lost ({_first_line(exc, self.url)}); "
                    "reconnecting, polling meanwhile",
                    extra={"action": "listener_lost"},
                )
            finally:
                self.connected.clear()

    async def _listen(self, conn: Any) -> None:
        from psycopg import sql

        listened = [*(channels.queue_channel(q) for q in self.queues), self._probe_channel]
        if self.on_pauses_changed is not None and self.pauses_channel is not None:
            listened.append(self.pauses_channel)
        for channel in listened:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))

    async def _pump(self, conn: Any, stop: asyncio.Event) -> None:
        while not stop.is_set():
            async for notify in conn.notifies(timeout=IDLE_PING_SECONDS):
                self._dispatch(notify.channel, notify.payload)
            # No traffic for a while: make sure the connection is still alive.
            await conn.execute("SELECT 1")

    def _dispatch(self, channel: str, payload: str) -> None:
        if channel == self._probe_channel:
            self._probe_heard.set()
            return
        try:
            message = json.loads(payload)
        except ValueError:
            return
        if channel == self.pauses_channel and self.on_pauses_changed is not None:
            queues = message.get("queues") if isinstance(message, dict) else None
            if isinstance(queues, list):
                self.on_pauses_changed(str(message.get("action")), [str(q) for q in queues])
            return
        queue = channels.queue_of(channel)
        if queue is None or not isinstance(message, dict):
            return
        if message.get("type") == channels.JOB_INSERTED:
            self.on_job_inserted(queue)
        elif message.get("type") == channels.ABORT_REQUESTED and "job_id" in message:
            self.on_abort_requested(queue, int(message["job_id"]))

    async def round_trip(self, pool: Any) -> bool:
        """True when a NOTIFY sent through ``pool`` reaches this listener."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.connected.wait(), ROUND_TRIP_TIMEOUT_SECONDS)
        if not self.connected.is_set():
            return False
        self._probe_heard.clear()
        async with pool.connection() as conn:
            await conn.execute("SELECT pg_notify(%s, 'probe')", (self._probe_channel,))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._probe_heard.wait(), ROUND_TRIP_TIMEOUT_SECONDS)
        return self._probe_heard.is_set()


def _first_line(exc: BaseException, url: str) -> str:
    from jobsys.db.url import scrub

    text = str(exc).strip()
    return scrub(text.splitlines()[0], url) if text else type(exc).__name__
