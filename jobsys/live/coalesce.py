"""Coalescing live events: many changes in, a bounded number of NOTIFYs out.

A worker finishing 10,000 jobs in a second must not send 10,000 notifications. The
:class:`Coalescer` merges what happens in a process per topic (counts summed, a few
ids kept) and the flusher service (``jobsys.live.services.EventFlusher``) flushes each
topic at most ``max_per_second`` times a second, in one transaction per flush.

Flushing is on the trailing edge, at least ``SETTLE_SECONDS`` after the first
change: the worker middleware records an outcome just *before* Procrastinate
persists the job's status, and a subscriber that re-reads on the event should
find that status committed.

Merging rules (pure, see :func:`merge`): numbers are summed; lists of ints are
concatenated, keeping the newest ``MAX_IDS``; a scalar named ``id`` or ``*_id`` is
gathered into the list ``ids`` / ``*_ids``; identical short strings are kept,
differing ones dropped; ``events`` counts the changes merged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from jobsys.live.publish import check_topic, publish

logger = logging.getLogger(__name__)

MAX_IDS = 10  # ids carried per coalesced event: enough to jump to one, never a list dump
SETTLE_SECONDS = 0.05  # minimum wait after the first change (lets the job status commit)
DEFAULT_MAX_PER_SECOND = 10

#: The counts the worker's live middleware records (jobsys.live.middleware).
_JOB_COUNTS = frozenset(("started", "succeeded", "failed", "aborted"))

Flusher = Callable[[dict[str, dict[str, Any]]], Awaitable[None]]


def _id_list_key(key: str) -> str | None:
    if key == "id":
        return "ids"
    if key.endswith("_id"):
        return key + "s"
    return None


def merge(into: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """Merge one change's ``data`` into the pending ``into`` (mutated and returned)."""
    into["events"] = int(into.get("events", 0)) + 1
    for key, value in data.items():
        if key in ("events", "topic"):
            continue
        list_key = _id_list_key(key)
        if list_key and isinstance(value, int) and not isinstance(value, bool):
            key, value = list_key, [value]
        if isinstance(value, bool):
            into[key] = bool(into.get(key, False)) or value
        elif isinstance(value, (int, float)):
            current = into.get(key, 0)
            into[key] = (current if isinstance(current, (int, float)) else 0) + value
        elif isinstance(value, (list, tuple)):
            ints = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
            current = into.get(key, [])
            into[key] = ([*current, *ints] if isinstance(current, list) else ints)[-MAX_IDS:]
        elif isinstance(value, str):
            if key not in into:
                into[key] = value
            elif into[key] != value:
                into[key] = None
    return into


def merge_job_change(into: dict[str, Any], what: str, job_id: int, queue: str) -> dict[str, Any]:
    """``merge(into, {what: 1, "id": job_id, "queue": queue})`` for the worker's hot
    path (two per job): the same result without walking a dict of the change. Only for
    an int ``job_id``, a str ``queue`` and a plain count name ``what``."""
    into["events"] = int(into.get("events", 0)) + 1
    current = into.get(what, 0)
    into[what] = (current if isinstance(current, (int, float)) else 0) + 1
    ids = into.get("ids")
    if isinstance(ids, list):
        ids = [*ids[-(MAX_IDS - 1) :], job_id] if ids else [job_id]
    else:
        ids = [job_id]
    into["ids"] = ids
    if "queue" not in into:
        into["queue"] = queue
    elif into["queue"] != queue:
        into["queue"] = None
    return into


class Coalescer:
    """Per-topic pending changes of one process, flushed at a bounded rate."""

    def __init__(self, max_per_second: int = DEFAULT_MAX_PER_SECOND) -> None:
        self.max_per_second = max_per_second
        self._pending: dict[str, dict[str, Any]] = {}
        self._wake: asyncio.Event | None = None
        #: Topics add_job_change has seen pass check_topic.
        self._checked_topics: set[str] = set()
        self.flushed_notifications = 0

    @property
    def interval(self) -> float:
        return 1.0 / self.max_per_second

    def add(self, topic: str, data: dict[str, Any] | None = None) -> None:
        """Record one change (no I/O; safe to call from a middleware on the hot path)."""
        check_topic(topic)
        merge(self._pending.setdefault(topic, {}), data or {})
        if self._wake is not None:
            self._wake.set()

    def add_job_change(self, topic: str, what: str, job_id: Any, queue: Any) -> None:
        """``add(topic, {what: 1, "id": job_id, "queue": queue})``, cheaper: the worker
        records two per job."""
        if (
            topic not in self._checked_topics
            or type(job_id) is not int
            or type(queue) is not str
            or what not in _JOB_COUNTS
        ):
            self.add(topic, {what: 1, "id": job_id, "queue": queue})
            self._checked_topics.add(topic)  # add() refused a bad topic before this
            return
        merge_job_change(self._pending.setdefault(topic, {}), what, job_id, queue)
        if self._wake is not None:
            self._wake.set()

    def pending(self) -> dict[str, dict[str, Any]]:
        return {topic: dict(data) for topic, data in self._pending.items()}

    def take(self) -> dict[str, dict[str, Any]]:
        """Everything pending, cleared: one payload per topic."""
        taken, self._pending = self._pending, {}
        return taken

    def restore(self, taken: dict[str, dict[str, Any]]) -> None:
        """Put back changes a failed flush could not send (merged with newer ones)."""
        for topic, data in taken.items():
            newer = self._pending.pop(topic, None)
            merged = dict(data)
            if newer:
                events = int(newer.get("events", 0))
                merge(merged, newer)
                merged["events"] = int(data.get("events", 0)) + events
            self._pending[topic] = merged

    async def flush_once(self, send: Flusher) -> int:
        """Send what is pending (one NOTIFY per topic); return how many were sent."""
        taken = self.take()
        if not taken:
            return 0
        try:
            await send(taken)
        except Exception:
            self.restore(taken)
            raise
        self.flushed_notifications += len(taken)
        return len(taken)

    def listen(self) -> None:
        """A flusher starts draining: changes from now on wake :meth:`changed`."""
        self._wake = asyncio.Event()
        if self._pending:
            self._wake.set()

    def stop_listening(self) -> None:
        self._wake = None

    async def changed(self, stop: asyncio.Event) -> None:
        """Wait for a change not flushed yet (or ``stop``); between :meth:`listen` and
        :meth:`stop_listening` only."""
        assert self._wake is not None, "listen() first"
        await _wait_either(self._wake, stop)

    def mark_flushing(self) -> None:
        """A flush starts: changes from now on wake :meth:`changed` again."""
        if self._wake is not None:
            self._wake.clear()

    def wake(self) -> None:
        """Make :meth:`changed` return at once (a failed flush put changes back)."""
        if self._wake is not None:
            self._wake.set()


async def _wait_either(event: asyncio.Event, stop: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()), asyncio.ensure_future(stop.wait())]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    """Sleep ``seconds``, or less if ``stop`` is set meanwhile."""
    if seconds <= 0:
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)


def connection_sender(pool: Any) -> Flusher:
    """A :data:`Flusher` publishing every topic in one transaction on a pool connection."""

    async def send(taken: dict[str, dict[str, Any]]) -> None:
        async with pool.connection() as conn, conn.transaction():
            for topic, data in taken.items():
                await publish(conn, topic, data)

    return send


_SHARED: Coalescer | None = None


def shared() -> Coalescer:
    """The process-wide coalescer: the worker middleware adds, the flusher service sends."""
    global _SHARED
    if _SHARED is None:
        _SHARED = Coalescer()
    return _SHARED


def flusher_running() -> bool:
    """Whether a flusher service is draining :func:`shared` in this process."""
    return _SHARED is not None and _SHARED._wake is not None
