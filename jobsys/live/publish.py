"""Publishing live topics over Postgres NOTIFY.

Every topic goes out on one channel, ``jobsys_events``, as a small JSON payload
``{"topic": ..., ...ids and counts}``: never args, never more than
``MAX_PAYLOAD_BYTES``. Publishing inside a transaction delivers on commit (and not at
all on rollback). A payload that would be too large is cut down to its topic and
counts, never raised: a notification must never make a business transaction fail.
"""

from __future__ import annotations

import json
import re
from typing import Any

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
    if not _TOPIC_RE.match(topic):
        raise UnknownTopic(f"topic {topic!r} must match [a-z][a-z0-9_]{{0,62}}")
    return topic


def payload(topic: str, data: dict[str, Any] | None = None) -> str:
    """The JSON payload for ``topic``: ids (ints) and counts only, bounded in size."""
    check_topic(topic)
    body: dict[str, Any] = {"topic": topic}
    for key, value in (data or {}).items():
        if isinstance(value, bool) or value is None or isinstance(value, (int, float)):
            body[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):
            body[key] = list(value)
        elif isinstance(value, str) and len(value) <= 64 and _TOPIC_RE.match(value):
            body[key] = value  # short identifiers such as a queue or kind name
    text = json.dumps(body, separators=(",", ":"))
    if len(text.encode()) <= MAX_PAYLOAD_BYTES:
        return text
    # Too many ids: keep the topic and the scalars, drop the lists, say it was cut.
    slim = {k: v for k, v in body.items() if not isinstance(v, list)}
    slim["truncated"] = True
    return json.dumps(slim, separators=(",", ":"))[:MAX_PAYLOAD_BYTES]


async def publish(conn: Any, topic: str, data: dict[str, Any] | None = None) -> None:
    """NOTIFY ``topic`` on ``conn`` (delivered when its transaction commits)."""
    await conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, payload(topic, data)))
