"""The failure filter shared by ``jobsys retry --all`` and ``jobsys failures list``. PURE.

One object, one validation, so "the failures I listed" and "the failures I retry"
are the same set. ``jobsys.retry.store.filter_where`` turns it into bound SQL.
Times: a duration back from now (``90s``, ``30m``, ``2h``, ``7d``, ``1w``) or an
ISO-8601 time (a time without zone is UTC).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta

from jobsys.errors import UsageError

KINDS = ("authentication", "transient", "runtime")
_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


@dataclass(frozen=True)
class FailureFilter:
    kind: str | None = None
    task: str | None = None
    queue: str | None = None
    lane: str | None = None
    account: str | None = None
    issue: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    retryable: bool | None = None

    def is_empty(self) -> bool:
        return all(getattr(self, f.name) is None for f in fields(self))

    def describe(self) -> dict[str, object]:
        """The filters that are set (for messages and JSON output)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }


def parse_time(value: str, *, now: datetime, option: str) -> datetime:
    """``2h`` (that long before ``now``) or an ISO-8601 time."""
    match = _DURATION_RE.match(value)
    if match:
        amount, unit = match.groups()
        return now - timedelta(seconds=float(amount) * _UNIT_SECONDS[unit])
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {value!r} is neither a duration nor a time.",
            hint="Use e.g. 30m, 2h, 7d, or 2026-02-20T03:00:00Z.",
        ) from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def build(
    *,
    kind: str | None = None,
    task: str | None = None,
    queue: str | None = None,
    lane: str | None = None,
    account: str | None = None,
    issue: int | None = None,
    since: str | None = None,
    until: str | None = None,
    retryable: bool | None = None,
    now: datetime | None = None,
) -> FailureFilter:
    """Validate raw option values into a :class:`FailureFilter` (UsageError, exit 2)."""
    now = now or datetime.now(UTC)
    if kind is not None and kind not in KINDS:
        raise UsageError(
            f"--kind {kind!r} is not a failure kind.", hint=f"Use one of {', '.join(KINDS)}."
        )
    if issue is not None and issue < 1:
        raise UsageError(f"--issue {issue} is not an issue id.")
    for option, value in (
        ("--task", task),
        ("--queue", queue),
        ("--lane", lane),
        ("--account", account),
    ):
        if value is not None and not value.strip():
            raise UsageError(f"{option} must not be empty.")
    start = parse_time(since, now=now, option="--since") if since else None
    end = parse_time(until, now=now, option="--until") if until else None
    if start and end and start >= end:
        raise UsageError("--since must be before --until.")
    return FailureFilter(
        kind=kind,
        task=task,
        queue=queue,
        lane=lane,
        account=account,
        issue=issue,
        since=start,
        until=end,
        retryable=retryable,
    )
