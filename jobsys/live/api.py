"""``jobsys.publish``: application code announcing a change on a live topic.

Three paths, chosen by where the code runs:

- ``connection=`` given: NOTIFY inside that connection's transaction, delivered on
  commit and not at all on rollback (under a savepoint, so it can never break the
  business transaction);
- inside a ``jobsys worker`` (its live-event flusher is running): merged into the
  process's coalescer, so a task refreshing 10,000 profiles sends a few
  notifications a second, not 10,000;
- anywhere else: one short connection to the configured database.

Payloads keep the topic, ids and counts only (:func:`jobsys.live.publish.payload`).
Database problems are logged, never raised; a malformed topic name raises
:class:`~jobsys.live.publish.UnknownTopic` (a programming error).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from jobsys.live import coalesce
from jobsys.live.publish import payload, publish_safely

logger = logging.getLogger(__name__)


async def publish(
    topic: str,
    data: dict[str, Any] | None = None,
    *,
    connection: Any | None = None,
    database_url: Callable[[], str],
) -> None:
    """Publish ``topic`` with ``data`` (ids and counts; anything else is dropped).
    ``database_url`` is asked only on the third path (the edge, ``jobsys.publish``,
    resolves it from the environment's configuration once)."""
    payload(topic, data)  # validates the topic before anything touches a connection
    if connection is not None:
        await publish_safely(connection, topic, data)
        return
    if coalesce.flusher_running():
        coalesce.shared().add(topic, data)
        return
    try:
        from jobsys.db.connect import connect

        async with connect(database_url()) as conn:
            await publish_safely(conn, topic, data)
    except Exception as exc:
        logger.warning(
            "could not publish %s: %s", topic, exc, extra={"action": "live_publish_failed"}
        )
