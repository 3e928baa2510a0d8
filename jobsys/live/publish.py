"""Publishing live topics over Postgres NOTIFY.

Every topic goes out on one channel, ``jobsys_events``, as a small JSON payload
``{"topic": ..., ...ids and counts}``: never args, never more than
``MAX_PAYLOAD_BYTES``. Publishing inside a transaction delivers on commit (and not at
all on rollback). A payload that would be too large is cut down to its topic and
counts, never raised: a notification must never make a business transaction fail.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

from jobsys.db.libpq import PQTRANS_INTRANS

logger = logging.getLogger(__name__)

CHANNEL = "jobsys_events"
MAX_PAYLOAD_BYTES = 512  # NOTIFY allows ~8000; we keep events small by design
TOPICS = (
    "jobs_changed",
    "job_failures_changed",
    "issues_changed",
    "dashboard_metrics_changed",
    "profiles_table_changed",
)
_TOPIC_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class UnknownTopic(ValueError):
    pass


def check_topic(topic: str) -> str:
    if not isinstance(topic, str) or not _TOPIC_RE.match(topic):
        raise UnknownTopic(f"topic {topic!r} must match [a-z][a-z0-9_]{{0,62}}")
    return topic


def payload(topic: str, data: dict[str, Any] | None = None) -> str:
    """The JSON payload for ``topic``: ids (ints) and counts only, bounded in size."""
    check_topic(topic)
    body: dict[str, Any] = {"topic": topic}
    for key, value in (data or {}).items():
        if not isinstance(key, str) or not _TOPIC_RE.match(key) or key == "topic":
            continue
        if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
            body[key] = value
        elif isinstance(value, (list, tuple)) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            body[key] = list(value)
        elif isinstance(value, str) and len(value) <= 64 and _TOPIC_RE.match(value):
            body[key] = value  # short identifiers such as a queue or kind name
    text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) <= MAX_PAYLOAD_BYTES:
        return text
    # Too many ids: keep the topic and the scalars, drop the lists, say it was cut.
    slim = {k: v for k, v in body.items() if not isinstance(v, list)}
    slim["truncated"] = True
    text = json.dumps(slim, separators=(",", ":"))
    if len(text.encode()) <= MAX_PAYLOAD_BYTES:
        return text
    return json.dumps({"topic": topic, "truncated": True}, separators=(",", ":"))


async def publish(conn: Any, topic: str, data: dict[str, Any] | None = None) -> None:
    """NOTIFY ``topic`` on ``conn`` (delivered when its transaction commits)."""
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload(topic, data)))


async def publish_safely(conn: Any, topic: str, data: dict[str, Any] | None = None) -> bool:
    """:func:`publish` that never breaks the caller's transaction.

    Inside a transaction the NOTIFY runs under a savepoint, so even an unexpected
    error leaves the business transaction usable; errors are logged, not raised.
    A malformed topic name is a programming error and still raises
    :class:`UnknownTopic`, before anything touches the connection.
    """
    text = payload(topic, data)
    try:
        status = getattr(getattr(conn, "info", None), "transaction_status", None)
        if status is not None and int(status) == PQTRANS_INTRANS:
            async with conn.transaction():
                await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, text))
        else:
            await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, text))
        return True
    except Exception as exc:
        logger.warning(
            "could not publish %s: %s",
            topic,
            exc,
            extra={"action": "live_publish_failed", "topic": topic},
        )
        return False


def jobs_changed_channel() -> str | None:
    """The channel an insert statement may NOTIFY ``jobs_changed`` on by itself (its
    payload ``{"topic": "jobs_changed", "deferred": n, "ids": [first ten]}``); None
    inside a worker, where :func:`announce_jobs_changed` coalesces instead."""
    # Looked up: coalesce imports this module (a cycle); absent or half-imported, no flusher runs.
    running = getattr(sys.modules.get("jobsys.live.coalesce"), "flusher_running", None)
    return None if running is not None and running() else CHANNEL


async def announce_jobs_changed(connection: Any, data: dict[str, Any]) -> None:
    """``jobs_changed`` for the dashboard after jobs were inserted or retried on
    ``connection`` (``jobsys.jobs.enqueue`` is the one caller): coalesced inside a
    worker, else delivered with the caller's commit (never on rollback, never breaking
    the transaction)."""
    from jobsys.live import coalesce

    if coalesce.flusher_running():
        coalesce.shared().add("jobs_changed", data)
    else:
        await publish_safely(connection, "jobs_changed", data)
