"""Durations and times as operators type them on the command line. Pure.

One grammar for every option that takes one (``--since``, ``--until``, ``--for``,
``--in``, ``--at``): a duration is numbers with units (``500ms``, ``90s``, ``15m``,
``2h``, ``1h30m``, ``1.5d``, ``1w``; a bare number is seconds for ``--in`` only); a
time is a duration back from now or an ISO-8601 time, taken as UTC when it has no
offset. Errors are :class:`UsageError` (exit 2) naming the option and the value.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from jobsys.errors import UsageError

_UNIT = r"(ms|sec|min|s|m|h|d|w)"
_PART = re.compile(rf"(\d+(?:\.\d+)?)\s*{_UNIT}", re.IGNORECASE)
_DURATION = re.compile(rf"^\s*(?:\d+(?:\.\d+)?\s*{_UNIT}\s*)+$", re.IGNORECASE)
_BARE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*$")
_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "sec": 1,
    "m": 60,
    "min": 60,
    "h": 3600,
    "d": 86400,
    "w": 604800,
}
#: Longer than any retention or mute anyone means; keeps datetime arithmetic in range.
MAX_SECONDS = 100 * 365 * 86400
DURATION_EXAMPLES = "30s, 15m, 1h30m, 7d or 1w"
TIME_EXAMPLE = "2026-02-20T03:00:00Z"


def _seconds(text: str, *, unit_required: bool) -> float | None:
    """Seconds in ``2h``, ``1h30m``, ``1.5d``; a bare number only without
    ``unit_required``; None when ``text`` is not a duration."""
    bare = _BARE.match(text)
    if bare:
        return None if unit_required else float(bare.group(1))
    if not _DURATION.match(text):
        return None
    return sum(float(n) * _UNIT_SECONDS[u.lower()] for n, u in _PART.findall(text))


def parse_duration(
    text: str, option: str, *, unit_required: bool = True, allow_zero: bool = False
) -> timedelta:
    """A positive duration (zero too with ``allow_zero``); a bare number is seconds
    unless ``unit_required``."""
    seconds = _seconds(text, unit_required=unit_required)
    if seconds is None:
        raise UsageError(
            f"{option} {text!r} is not a duration (a number and a unit: ms, s, m, h, d, w).",
            hint=f"Use e.g. {DURATION_EXAMPLES}.",
        )
    if seconds > MAX_SECONDS or (seconds <= 0 and not (allow_zero and seconds == 0)):
        least = "0" if allow_zero else "more than 0"
        raise UsageError(
            f"{option} {text!r} is out of range: {least}, at most 100 years.",
            hint=f"Use e.g. {DURATION_EXAMPLES}.",
        )
    return timedelta(seconds=seconds)


def parse_iso(text: str, option: str) -> datetime:
    """An ISO-8601 time; without an offset it is UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"{option} {text!r} is not an ISO-8601 time.", hint=f"Example: {TIME_EXAMPLE}."
        ) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def parse_time(text: str, option: str, now: datetime) -> datetime:
    """A duration back from ``now`` (``2h``) or an ISO-8601 time."""
    if _seconds(text, unit_required=True) is not None:
        return now - parse_duration(text, option)
    try:
        return parse_iso(text, option)
    except UsageError:
        raise UsageError(
            f"{option} {text!r} is neither a duration nor an ISO-8601 time.",
            hint=f"Use e.g. {DURATION_EXAMPLES} (that long ago), or {TIME_EXAMPLE}.",
        ) from None


def short(seconds: float | None) -> str:
    """A duration for a narrow column: ``4.2s``, ``42s``, ``4m05s``, ``2h03m``, ``1.5d``."""
    if seconds is None:
        return "-"
    seconds = max(0.0, float(seconds))
    if seconds < 10:
        return f"{seconds:.1f}s"
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    if seconds < 86400:
        return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"
    return f"{seconds / 86400:.1f}d"


def coarse(seconds: float) -> str:
    """A duration to a glance, for sentences ("paused 3m ago", "resumes in 27m"):
    ``45s``, ``3m``, ``2h05m``, ``3d04h`` (whole units, rounded down past a minute)."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes = whole // 60
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h" if hours else f"{days}d"
