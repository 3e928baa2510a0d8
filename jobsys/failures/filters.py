"""Parsing and validating the filters of ``failures list`` and ``issues``. Pure.

Every value is checked before any query runs (bad input exits 2 and touches
nothing); the values themselves only ever reach SQL as bound parameters.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from jobsys.errors import UsageError
from jobsys.failures.classify import KINDS

MAX_LIMIT = 10_000
GROUP_BY = ("fingerprint", "task", "kind")
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|sec|m|min|h|d|w)\s*$", re.I)
_UNITS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str, option: str) -> timedelta:
    """``30s``, ``15m``, ``2h``, ``7d``, ``1w`` as a positive duration."""
    match = _DURATION.match(text)
    if not match:
        raise UsageError(
            f"{option}: {text!r} is not a duration.", hint="Use e.g. 30s, 15m, 2h, 7d or 1w."
        )
    seconds = float(match.group(1)) * _UNITS[match.group(2).lower()]
    if seconds <= 0 or seconds > 100 * 365 * 86400:
        raise UsageError(f"{option}: {text!r} is out of range.", hint="Use e.g. 2h or 7d.")
    return timedelta(seconds=seconds)


def parse_time(text: str, option: str, now: datetime) -> datetime:
    """A duration back from ``now`` (``2h``) or an ISO-8601 time (UTC when no offset)."""
    if _DURATION.match(text):
        return now - parse_duration(text, option)
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option}: {text!r} is neither a duration nor an ISO time.",
            hint="Use e.g. 2h, 7d or 2026-02-20T03:00:00Z.",
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class FailureFilters:
    kind: str | None = None
    task: str | None = None
    queue: str | None = None
    lane: str | None = None
    account: str | None = None
    profile: str | None = None
    issue: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    retryable: bool | None = None
    before: int | None = None

    def params(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if v is not None}


def failure_filters(
    *,
    kind: str | None = None,
    task: str | None = None,
    queue: str | None = None,
    lane: str | None = None,
    account: str | None = None,
    profile: str | None = None,
    issue: int | None = None,
    since: str | None = None,
    until: str | None = None,
    retryable: bool | None = None,
    before: int | None = None,
    now: datetime | None = None,
) -> FailureFilters:
    now = now or datetime.now(UTC)
    if kind is not None and kind not in KINDS:
        raise UsageError(
            f"--kind: {kind!r} is not a failure kind.", hint=f"Use {', '.join(KINDS)}."
        )
    for option, value in (("--issue", issue), ("--before", before)):
        if value is not None and value < 1:
            raise UsageError(f"{option}: ids are positive integers, not {value}.")
    start = parse_time(since, "--since", now) if since is not None else None
    end = parse_time(until, "--until", now) if until is not None else None
    if start is not None and end is not None and start >= end:
        raise UsageError("--since must be before --until.")
    for option, text in (
        ("--task", task),
        ("--queue", queue),
        ("--lane", lane),
        ("--account", account),
        ("--profile", profile),
    ):
        if text is not None and (not text or len(text) > 1000 or "\x00" in text):
            raise UsageError(f"{option}: give a non-empty value without NUL, under 1000 chars.")
    return FailureFilters(
        kind=kind,
        task=task,
        queue=queue,
        lane=lane,
        account=account,
        profile=profile,
        issue=issue,
        since=start,
        until=end,
        retryable=retryable,
        before=before,
    )


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit: {limit} is out of range.", hint=f"Use 1 to {MAX_LIMIT}.")
    return limit


def check_group_by(group_by: str | None) -> str | None:
    if group_by is not None and group_by not in GROUP_BY:
        raise UsageError(f"--group-by: {group_by!r} is not one of {', '.join(GROUP_BY)}.")
    return group_by
