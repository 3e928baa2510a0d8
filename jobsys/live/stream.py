"""``jobsys events``: follow the live topics and hand each event to the caller.

Topics are checked before anything connects (unknown: a usage error listing the
known ones). The stream survives dropped connections; after each reconnection a
``resync`` record tells a script that events may have been missed while the
connection was down, so it should re-read what it shows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from jobsys.errors import UsageError, did_you_mean
from jobsys.live.publish import TOPICS

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings

RESYNC = "resync"


def known_topics(config: Config) -> tuple[str, ...]:
    return (*TOPICS, *(t for t in config.queues.live.extra_topics if t not in TOPICS))


def check_topics(topics: Sequence[str], config: Config) -> list[str] | None:
    """The wanted topics (None: all), or :class:`UsageError` naming the known ones."""
    if not topics:
        return None
    known = known_topics(config)
    unknown = [t for t in topics if t not in known]
    if unknown:
        hints = [f"{topic!r}{did_you_mean(topic, known, n=1)}" for topic in unknown]
        raise UsageError(
            f"unknown topic {', '.join(hints)}; known topics: {', '.join(known)}",
            hint="Add your own with live.extra_topics in queues.yaml.",
        )
    return list(dict.fromkeys(topics))


async def follow(
    settings: Settings,
    config: Config,
    topics: Sequence[str],
    on_event: Callable[[dict[str, Any]], None],
    on_notice: Callable[[str], None],
) -> None:
    """Stream events until cancelled. The first connection failing raises (exit 69)."""
    from jobsys.db.connect import resolve
    from jobsys.live.subscriber import Event, Lost, Synced, subscribe

    wanted = check_topics(topics, config)
    url = resolve(settings, config).url
    async for message in subscribe(url, topics=wanted, fail_first=True):
        if isinstance(message, Event):
            on_event(
                {"topic": message.topic, "data": message.data, "received_at": message.received_at}
            )
        elif isinstance(message, Lost):
            on_notice(f"connection lost ({message.error}); reconnecting in {message.retry_in:.1f}s")
        elif isinstance(message, Synced):
            if message.reconnected:
                on_notice("reconnected; events sent while disconnected were missed")
                on_event({"topic": RESYNC, "data": {"reason": "reconnected"}, "received_at": None})
            else:
                on_notice(f"listening for {', '.join(wanted) if wanted else 'every topic'}")
