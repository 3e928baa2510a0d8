"""One LISTEN per web process, fanned out to every browser as server-sent events.

:class:`LiveHub` follows jobsys's channel and Procrastinate's (so a deferral from any
code shows) through :func:`jobsys.live.subscriber.subscribe`, and copies each message
to one bounded queue per connected browser. A browser too slow to keep up loses
events and gets one ``resync`` instead (it re-reads the page). Events carry what the
NOTIFY payload carries: the topic, ids and counts, never args.

What a browser receives (``event:`` name, ``data:`` JSON):

- ``status`` ``{"connected": true|false, "error": ...}``: the database connection of
  the hub; false shows the banner, true hides it and the page re-reads;
- one of the live topics (``jobs_changed`` ...) with its payload;
- ``resync``: events were dropped; re-read.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

from jobsys.live.publish import TOPICS

logger = logging.getLogger(__name__)

#: The hub reads the LISTEN socket at most once per this many seconds (the first event
#: after a quiet spell at once): everything read together goes to each browser as one
#: message, each topic once (counts summed, a few ids kept:
#: :func:`jobsys.live.coalesce.merge`), serialised once for every browser. At 100
#: events a second that is 10 reads and at most 10 messages a second per browser.
COALESCE_SECONDS = 0.1
#: Events a slow browser may have pending before it is told to resync instead.
CLIENT_QUEUE_SIZE = 256
#: A comment line this often keeps proxies from closing a quiet stream.
HEARTBEAT_SECONDS = 15.0
KEEPALIVE = b": keepalive\n\n"


def sse(event: str, data: dict[str, Any]) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


class LiveHub:
    def __init__(self, url: str, topics: tuple[str, ...] = TOPICS) -> None:
        self.url = url
        self.topics = topics
        self.connected = False
        self.error: str | None = None
        self.listen_connections = 0  # how many LISTEN connections this process opened
        self.events_received = 0
        self._clients: set[asyncio.Queue[bytes | None]] = set()
        self._tasks: list[asyncio.Task[None]] = []
        self._pending: dict[str, dict[str, Any]] = {}

    @property
    def clients(self) -> int:
        return len(self._clients)

    def start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._follow(), name="jobsys-web-live"),
                asyncio.create_task(self._heartbeat(), name="jobsys-web-heartbeat"),
            ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        for queue in list(self._clients):
            self._put(queue, None)

    def status(self) -> bytes:
        return sse("status", {"connected": self.connected, "error": self.error})

    def _put(self, queue: asyncio.Queue[bytes | None], item: bytes | None) -> None:
        try:
            queue.put_nowait(item)
        except asyncio.QueueFull:
            # Drop what is pending: one resync says the same, and the page re-reads.
            while not queue.empty():
                queue.get_nowait()
            queue.put_nowait(sse("resync", {}))

    def broadcast(self, item: bytes) -> None:
        for queue in list(self._clients):
            self._put(queue, item)

    async def _heartbeat(self) -> None:
        """One keep-alive for every browser (not a timer per browser and message)."""
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            self.broadcast(KEEPALIVE)

    async def _follow(self) -> None:
        from jobsys.live.subscriber import Drained, Event, Lost, Synced, subscribe

        wanted = set(self.topics)
        async for message in subscribe(
            self.url, topics=None, with_job_inserts=True, batch_seconds=COALESCE_SECONDS
        ):
            if isinstance(message, Synced):
                self.listen_connections += 1
                self.connected, self.error = True, None
                self.broadcast(self.status())
            elif isinstance(message, Lost):
                if self.connected or self.error is None:
                    logger.warning(
                        "live updates lost the database: %s",
                        message.error,
                        extra={"action": "web_live_lost"},
                    )
                self.connected, self.error = False, message.error
                self.broadcast(self.status())
            elif isinstance(message, Event) and message.topic in wanted:
                self.events_received += 1
                self._coalesce(message.topic, message.data)
            elif isinstance(message, Drained):
                self._send_pending()

    def _coalesce(self, topic: str, data: dict[str, Any]) -> None:
        from jobsys.live.coalesce import merge

        merge(self._pending.setdefault(topic, {}), data)

    def _send_pending(self) -> None:
        """What one read gathered, to every browser as one message (serialised once)."""
        pending, self._pending = self._pending, {}
        if pending and self._clients:
            self.broadcast(b"".join(sse(topic, data) for topic, data in pending.items()))

    async def stream(self) -> AsyncIterator[bytes]:
        """One browser's events, starting with the current status, until it goes away."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue(CLIENT_QUEUE_SIZE)
        self._clients.add(queue)
        try:
            yield b"retry: 2000\n\n" + self.status()
            while True:
                item = await queue.get()
                if item is None:
                    return
                yield item
        finally:
            with contextlib.suppress(KeyError):
                self._clients.remove(queue)
