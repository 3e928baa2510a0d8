"""The host clock, the one place jobsys reads it, with an offset tests can inject.

``JOBSYS_CLOCK_OFFSET_SECONDS`` (float, default 0) shifts every host-clock read of
this process, so a test can run one scheduler 90 s behind and another 90 s ahead.
Decisions that must agree across hosts (which schedule ticks are due) never use this
clock: they use the database's (``clock_timestamp()``). The host clock only measures
how far this host is off, for a warning.

It also writes the times jobsys labels UTC (:func:`utc_text`): psycopg returns a
``timestamptz`` in the session's ``TimeZone``, which is the server's or the
database's default and need not be UTC, so a time is converted before it is labelled.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

OFFSET_ENV = "JOBSYS_CLOCK_OFFSET_SECONDS"


def offset_seconds() -> float:
    """The injected offset; read at every call so a running test can move it."""
    raw = os.environ.get(OFFSET_ENV, "").strip()
    if not raw:
        return 0.0
    try:
        return float(raw)
    except ValueError:
        return 0.0


def now() -> datetime:
    """The host's current time (aware, UTC), offset by ``JOBSYS_CLOCK_OFFSET_SECONDS``."""
    return datetime.now(UTC) + timedelta(seconds=offset_seconds())


def utc(value: datetime) -> datetime:
    """``value`` in UTC: an aware time converted (one read from the database is in the
    session's TimeZone), a naive one taken as UTC."""
    return value.astimezone(UTC) if value.tzinfo is not None else value.replace(tzinfo=UTC)


def utc_text(value: datetime, spec: str = "%Y-%m-%d %H:%M") -> str:
    """``2026-12-06 21:42 UTC``: ``value`` in UTC, formatted with ``spec``, labelled."""
    return f"{utc(value):{spec}} UTC"
