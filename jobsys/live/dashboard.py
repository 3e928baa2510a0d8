"""The live dashboard's engine: when to read a snapshot and when to redraw.

Redraws happen on events (a :mod:`~jobsys.live.subscriber` on jobsys's channel and
Procrastinate's, so every deferral shows), on a slow timer (rates move even when
nothing is published), and on demand (:meth:`Dashboard.poke`, e.g. a terminal
resize); never more than ``max_redraws_per_second``. A database that goes away is
reported on screen with the time of the data still shown, and the dashboard keeps
retrying; it never exits on its own. Drawing is the caller's (``draw(snapshot,
status)``), so this module has no terminal code.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobsys.live.coalesce import sleep_or_stop

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings

DEFAULT_MAX_REDRAWS_PER_SECOND = 4.0
DEFAULT_SLOW_REFRESH_SECONDS = 5.0

Draw = Callable[[dict[str, Any] | None, str], None]


async def snapshot_once(settings: Settings, config: Config) -> dict[str, Any]:
    """One snapshot (``dashboard --once``): unreachable database exits 69."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.live import snapshot

    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        return await snapshot.take(conn, config)


class Dashboard:
    def __init__(
        self,
        settings: Settings,
        config: Config,
        draw: Draw,
        *,
        max_redraws_per_second: float = DEFAULT_MAX_REDRAWS_PER_SECOND,
        slow_refresh_seconds: float = DEFAULT_SLOW_REFRESH_SECONDS,
    ) -> None:
        self.settings = settings
        self.config = config
        self.draw = draw
        self.min_interval = 1.0 / max_redraws_per_second
        self.slow_refresh_seconds = slow_refresh_seconds
        self.snapshot: dict[str, Any] | None = None
        self.redraws = 0
        self._dirty = asyncio.Event()
        self._stop = asyncio.Event()
        self._db_error: str | None = None
        self._events_error: str | None = None

    def poke(self) -> None:
        """Redraw soon (events, resize)."""
        self._dirty.set()

    def quit(self) -> None:
        self._stop.set()

    def status(self) -> str:
        problem = self._db_error or self._events_error
        if problem is None:
            return ""
        shown = self.snapshot["taken_at"].strftime("%H:%M:%SZ") if self.snapshot else "nothing yet"
        return f"DATABASE UNREACHABLE: {problem} · reconnecting · data shown from {shown}"

    async def _follow(self, url: str) -> None:
        from jobsys.live.subscriber import Lost, Synced, subscribe

        async for message in subscribe(url, with_job_inserts=True):
            if isinstance(message, Lost):
                self._events_error = message.error
            elif isinstance(message, Synced):
                self._events_error = None
            self.poke()

    async def _read(self, conn: Any, url: str, config: Config) -> Any:
        import psycopg
        from psycopg.rows import dict_row

        from jobsys.db.connect import check_schema, driver_options
        from jobsys.live import snapshot

        if conn is None or conn.closed:
            conn = await psycopg.AsyncConnection.connect(
                url,
                autocommit=True,
                row_factory=dict_row,
                connect_timeout=5,
                **driver_options("jobsys-dashboard"),
            )
            await check_schema(conn)
        self.snapshot = await snapshot.take(conn, config)
        return conn

    async def run(self) -> None:
        """Read and draw until :meth:`quit`."""
        import psycopg

        from jobsys.db import url as db_url
        from jobsys.db.connect import resolve

        config = self.config
        url = resolve(self.settings, config).url
        follower = asyncio.create_task(self._follow(url))
        conn: Any = None
        last_draw = -float("inf")
        self.draw(None, "connecting…")
        self.poke()
        try:
            while not self._stop.is_set():
                await _wait_any(self._dirty, self._stop, self.slow_refresh_seconds)
                if self._stop.is_set():
                    break
                await sleep_or_stop(self._stop, last_draw + self.min_interval - time.monotonic())
                self._dirty.clear()
                try:
                    conn = await self._read(conn, url, config)
                    self._db_error = None
                except (psycopg.OperationalError, psycopg.InterfaceError, OSError) as exc:
                    text = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
                    self._db_error = db_url.scrub(text, url)
                    if conn is not None:
                        await conn.close()
                    conn = None
                last_draw = time.monotonic()
                self.redraws += 1
                self.draw(self.snapshot, self.status())
        finally:
            follower.cancel()
            await asyncio.gather(follower, return_exceptions=True)
            if conn is not None:
                await conn.close()


async def _wait_any(event: asyncio.Event, stop: asyncio.Event, timeout: float) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
