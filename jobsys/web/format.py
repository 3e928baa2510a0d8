"""Template filters: times in UTC, durations, JSON. Pure."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from urllib.parse import urlencode

from jobsys.clock import utc
from jobsys.timespec import short


def when(value: Any) -> str:
    """``2026-12-05 21:40:03Z``; an ISO-8601 string (a JSON detail's time) too; other
    strings pass through; None is a dash."""
    if value is None:
        return "-"
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return value
    if isinstance(value, datetime):
        return utc(value).strftime("%Y-%m-%d %H:%M:%SZ")
    return str(value)


def seconds(value: Any) -> str:
    """``850 ms`` under a second, else as the terminal dashboard writes it (``4m05s``)."""
    if value is None:
        return "-"
    if float(value) < 1:
        return f"{float(value) * 1000:.0f} ms"
    return short(float(value))


def pretty(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)


def with_param(query: Any, key: str, value: Any, drop: tuple[str, ...] = ()) -> str:
    """The query string ``query`` (Starlette's QueryParams) with ``key`` set to ``value``
    and the ``drop`` ones left out: paging and group links keep every filter."""
    items = [(k, v) for k, v in query.multi_items() if k != key and k not in drop]
    return urlencode([*items, (key, str(value))])


def install(env: Any) -> None:
    env.filters.update(when=when, seconds=seconds, pretty=pretty, with_param=with_param)
