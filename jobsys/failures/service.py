"""Operator-level failure queries behind ``jobsys failures ...``.

Input is validated (``jobsys.failures.filters``) before anything touches the database.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobsys.db.session import command_connection
from jobsys.errors import not_found
from jobsys.failures import store
from jobsys.failures.filters import FailureFilter, unknown_names
from jobsys.settings import Settings

if TYPE_CHECKING:
    from jobsys.config import Config

#: A list's ``total`` is counted up to this many matches (past it: None, "more than").
COUNT_CAP = 1_000  # 170 ms at 10,000 on a 1,000,000-row filter (make bench); ~10x less here


def public(row: dict[str, Any]) -> dict[str, Any]:
    """A failure as the JSON contract shows it (``retry_state`` always an object)."""
    out = dict(row)
    out["retry_state"] = out.get("retry_state") or {}
    return out


async def list_failures(
    settings: Settings,
    config: Callable[[], Config],
    filters: FailureFilter,
    *,
    limit: int,
    group_by: str | None = None,
    window: int | None = None,
) -> dict[str, Any]:
    """Newest first, keyset-paginated by (occurred_at, id); or counts per group.

    With ``window``, groups count only the newest ``window`` matching failures and
    the result says so (``window``: how many were counted, the oldest counted, and
    whether that was all of them). ``config`` loads the configuration (the edge's
    loader): asked to check a --queue/--lane (a broken file is then a note) and, when
    no URL is given, to find the database."""
    notes = _name_notes(config, filters)
    params = filters.params()
    async with command_connection(settings, config) as conn:
        if group_by is not None and window is not None:
            params.pop("before", None)
            rows = await store.group_failures_window(conn, params, group_by, limit, window)
            return _windowed_groups(group_by, rows, window, notes)
        if group_by is not None:
            params.pop("before", None)
            groups = await store.group_failures(conn, params, group_by, limit)
            total = (
                len(groups)
                if len(groups) < limit
                else await store.count_failures(conn, params, COUNT_CAP, group_by)
            )
            return {"group_by": group_by, "groups": groups, "total": total, "notes": notes}
        unpaged = {k: v for k, v in params.items() if k != "before"}
        total = await store.count_failures(conn, unpaged, COUNT_CAP)
        if filters.before is not None:
            at = await store.failure_position(conn, filters.before)
            if at is None:
                raise not_found("failure", filters.before, listed_by="jobsys failures list")
            params["before_at"] = at
        rows = await store.list_failures(conn, params, limit)
    next_before = rows[-1]["id"] if len(rows) == limit else None
    return {
        "failures": [public(r) for r in rows],
        "count": len(rows),
        "total": total,
        "next_before": next_before,
        "notes": notes,
    }


def _windowed_groups(
    group_by: str, rows: list[dict[str, Any]], window: int, notes: list[str]
) -> dict[str, Any]:
    first = rows[0] if rows else {}
    counted = int(first.get("window_failures") or 0)
    groups = [{k: v for k, v in row.items() if not k.startswith("window_")} for row in rows]
    return {
        "group_by": group_by,
        "groups": groups,
        "total": int(first.get("window_groups") or 0),
        "notes": notes,
        "window": {
            "newest": window,
            "counted": counted,
            "oldest": first.get("window_oldest"),
            "complete": counted < window,
        },
    }


def _name_notes(config: Callable[[], Config], filters: FailureFilter) -> list[str]:
    """Notes on a --queue/--lane the configuration does not know. Read only when one is
    given, and never fatal: listing failures during an incident must not depend on the
    configuration files being healthy."""
    if filters.queue is None and filters.lane is None:
        return []
    from jobsys.errors import ConfigError

    try:
        loaded = config()
    except ConfigError as exc:
        first = exc.problems[0] if exc.problems else "unreadable"
        return [f"--queue/--lane not checked against the configuration ({first})"]
    return unknown_names(filters, loaded.all_queues, loaded.lanes)


async def show_failure(
    settings: Settings, config: Callable[[], Config], failure_id: int
) -> dict[str, Any]:
    """One failure; ``issue`` is its issue's ``{id, title, status}`` (None: no issue)."""
    async with command_connection(settings, config) as conn:
        return await read_failure(conn, failure_id)


async def read_failure(conn: Any, failure_id: int) -> dict[str, Any]:
    """:func:`show_failure` on a connection the caller holds."""
    row = await store.get_failure(conn, failure_id)
    if row is None:
        raise not_found("failure", failure_id, listed_by="jobsys failures list")
    out = public(row)
    title, status = out.pop("issue_title", None), out.pop("issue_status", None)
    out["issue"] = (
        {"id": out["issue_id"], "title": title, "status": status}
        if out.get("issue_id") is not None
        else None
    )
    return out
