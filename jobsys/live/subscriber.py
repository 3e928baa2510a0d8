"""A reliable LISTEN: events in order, and a signal to re-read whenever some may be lost.

:func:`subscribe` yields three kinds of message:

- :class:`Synced` right after LISTEN is active, on the first connection and after
  every reconnection. The consumer reads its current state *then*: LISTEN comes
  first, so a change committed after the read arrives as an event, and one
  committed before it is in the read. Nothing falls in the gap.
- :class:`Event`, one per notification of a wanted topic.
- :class:`Lost` when the connection dropped (terminated backend, restart, network):
  the subscriber waits with exponential backoff, reconnects, and yields
  :class:`Synced` again, so the consumer re-reads what it missed.

A connection that dies silently is noticed by a ``SELECT 1`` every
``keepalive_seconds`` of quiet. Procrastinate's own channel can be followed too
(``with_job_inserts=True``): its ``job_inserted`` notifications become
``jobs_changed`` events, so deferrals by any code are seen. Since migration 0024 one
such notification stands for every job one statement put on its queue (it carries
one of their ids): the event's ``deferred: 1`` means "jobs were deferred, re-read",
not a count (jobsys's own defers announce their count on ``jobs_changed``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from jobsys.db import url as db_url
from jobsys.db.connect import driver_options
from jobsys.engine import channels
from jobsys.live.publish import CHANNEL

logger = logging.getLogger(__name__)

JOB_INSERTS_CHANNEL = channels.ANY_QUEUE_CHANNEL
APPLICATION_NAME = "jobsys-subscriber"
DEFAULT_KEEPALIVE_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 5


@dataclass(frozen=True)
class Event:
    topic: str
    data: dict[str, Any]
    received_at: datetime
    channel: str = CHANNEL


@dataclass(frozen=True)
class Synced:
    """LISTEN is active: read the current state now."""

    reconnected: bool
    backend_pid: int


@dataclass(frozen=True)
class Lost:
    """The connection is gone; the subscriber retries in ``retry_in`` seconds."""

    error: str
    retry_in: float


@dataclass(frozen=True)
class Drained:
    """Every notification of one read has been yielded (only with ``batch_seconds``):
    a consumer that batches sends what it gathered now."""


Message = Event | Synced | Lost | Drained


@dataclass
class Backoff:
    """Exponential backoff with jitter: 0.2 s, 0.4 s, ... up to ``maximum``."""

    initial: float = 0.2
    maximum: float = 10.0
    factor: float = 2.0
    _current: float = field(default=0.0, init=False)

    def next(self) -> float:
        self._current = (
            self.initial if self._current == 0 else min(self.maximum, self._current * self.factor)
        )
        return self._current * random.uniform(0.8, 1.2)

    def reset(self) -> None:
        self._current = 0.0


def decode(channel: str, text: str) -> Event | None:
    """The event a notification carries, or None for a malformed one."""
    now = datetime.now(UTC)
    try:
        body = json.loads(text)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    if channel == JOB_INSERTS_CHANNEL:
        job_id = body.get("job_id")
        kind = {channels.JOB_INSERTED: "deferred", channels.ABORT_REQUESTED: "abort_requested"}.get(
            str(body.get("type"))
        )
        if kind is None or not isinstance(job_id, int):
            return None
        return Event("jobs_changed", {kind: 1, "ids": [job_id]}, now, channel)
    topic = body.pop("topic", None)
    if not isinstance(topic, str):
        return None
    return Event(topic, body, now, channel)


async def subscribe(
    url: str,
    *,
    topics: Iterable[str] | None = None,
    with_job_inserts: bool = False,
    keepalive_seconds: float = DEFAULT_KEEPALIVE_SECONDS,
    backoff: Backoff | None = None,
    fail_first: bool = False,
    batch_seconds: float = 0.0,
) -> AsyncIterator[Message]:
    """Messages until the consumer stops iterating (see the module docstring).

    With ``fail_first``, a first connection that fails raises
    :class:`DatabaseUnavailable` instead of retrying (commands that should exit 69).

    With ``batch_seconds``, the socket is read at most once per that many seconds:
    the first notification after a quiet spell is read at once, later ones wait in
    the kernel's buffer and arrive together, each read followed by :class:`Drained`.
    At 100 events a second that is 10 wake-ups instead of 100 (the web console's
    hub: one message per read to every browser).
    """
    import psycopg
    from psycopg import sql

    wanted = set(topics) if topics is not None else None
    listened = [CHANNEL, *([JOB_INSERTS_CHANNEL] if with_job_inserts else [])]
    backoff = backoff or Backoff()
    connected_before = False
    while True:
        try:
            conn = await psycopg.AsyncConnection.connect(
                url,
                autocommit=True,
                connect_timeout=CONNECT_TIMEOUT_SECONDS,
                **driver_options(APPLICATION_NAME),
            )
        except psycopg.Error as exc:
            if fail_first and not connected_before:
                from jobsys.db.connect import translate

                raise translate(exc, url) from None
            delay = backoff.next()
            yield Lost(_describe(exc, url), delay)
            await asyncio.sleep(delay)
            continue
        try:
            for channel in listened:
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(channel)))
            backoff.reset()
            yield Synced(reconnected=connected_before, backend_pid=conn.info.backend_pid)
            connected_before = True
            while True:
                read = False
                async for notify in conn.notifies(
                    timeout=keepalive_seconds, stop_after=1 if batch_seconds > 0 else None
                ):
                    read = True
                    event = decode(notify.channel, notify.payload)
                    if event is not None and (wanted is None or event.topic in wanted):
                        yield event
                if read and batch_seconds > 0:
                    yield Drained()
                    await asyncio.sleep(batch_seconds)
                    continue
                await conn.execute("SELECT 1")  # a silently dead connection raises here
        except psycopg.Error as exc:
            delay = backoff.next()
            logger.info(
                "subscription lost: %s",
                _describe(exc, url),
                extra={"action": "live_subscription_lost"},
            )
            yield Lost(_describe(exc, url), delay)
            await asyncio.sleep(delay)
        finally:
            await conn.close()


def _describe(exc: Exception, url: str) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return db_url.scrub(text, url)


__all__ = [
    "JOB_INSERTS_CHANNEL",
    "Backoff",
    "Drained",
    "Event",
    "Lost",
    "Message",
    "Synced",
    "decode",
    "subscribe",
]
