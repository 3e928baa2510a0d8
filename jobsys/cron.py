"""Cron expressions: parse, validate and compute fire times. Pure, no I/O.

Five fields (minute hour day-of-month month day-of-week) or six, the sixth being
seconds (croniter's and Procrastinate's convention). ``@hourly`` and friends work.
An expression that can never fire (``0 0 30 2 *``) is invalid.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


class CronInvalid(ValueError):
    pass


def timezone_of(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, IsADirectoryError):
        raise CronInvalid(
            f"unknown timezone {name!r} (use an IANA name such as UTC or Europe/Paris)"
        ) from None


def validate(expression: str) -> None:
    """Raise :class:`CronInvalid` with a readable message unless ``expression`` can fire."""
    from croniter import CroniterBadCronError, CroniterBadDateError, croniter

    if not isinstance(expression, str) or not expression.strip():
        raise CronInvalid("cron expression is empty")
    fields = expression.split()
    if not expression.startswith("@") and len(fields) not in (5, 6):
        raise CronInvalid(
            f"cron expression {expression!r} has {len(fields)} fields; "
            "expected 5 (min hour day month weekday) or 6 (with seconds last)"
        )
    try:
        itr = croniter(expression, datetime(2026, 1, 1))
        itr.get_next(datetime)
    except CroniterBadDateError:
        raise CronInvalid(f"cron expression {expression!r} never fires") from None
    except (CroniterBadCronError, ValueError, KeyError) as exc:
        raise CronInvalid(f"invalid cron expression {expression!r}: {exc}") from None


def next_fire(expression: str, after: datetime, tz: tzinfo) -> datetime:
    """First fire time strictly after ``after`` (aware), evaluated in ``tz``."""
    from croniter import croniter

    return croniter(expression, after.astimezone(tz)).get_next(datetime)


def previous_fire(expression: str, at_or_before: datetime, tz: tzinfo) -> datetime:
    """Last fire time at or before ``at_or_before`` (aware), evaluated in ``tz``."""
    from croniter import croniter

    # Not croniter.match: it matches every second of a matching minute for a 5-field
    # expression ("* * * * *" matches 12:00:59). A fire time is a whole second, and
    # get_prev is strictly before its start: start one second after the bound.
    start = at_or_before.astimezone(tz).replace(microsecond=0) + timedelta(seconds=1)
    return croniter(expression, start).get_prev(datetime)


def due_ticks(
    expression: str,
    tz: tzinfo,
    *,
    after: datetime,
    until: datetime,
    catch_up: int,
    max_missed: int,
) -> tuple[list[datetime], list[datetime], bool]:
    """Fire times in ``(after, until]``, split into those to enqueue and those missed.

    The newest ``catch_up`` ticks are enqueued (ascending); up to ``max_missed`` older
    ones are returned as missed; the third value says whether even older ticks were
    left uncounted. Walks backwards from ``until``, so the work is bounded by
    ``catch_up + max_missed`` whatever the downtime was.
    """
    from croniter import croniter

    limit = max(catch_up, 0) + max(max_missed, 0)
    # Ticks are whole seconds, and never croniter.match: it matches any second of a
    # matching minute for 5-field expressions, which enqueued "* * * * *" on every
    # scheduler pass of the minute. Start one second after ``until``: get_prev is
    # strictly earlier, so the first candidate is the last fire time <= until.
    start = until.astimezone(tz).replace(microsecond=0) + timedelta(seconds=1)
    itr = croniter(expression, start)
    found: list[datetime] = []
    candidate = itr.get_prev(datetime)
    more = False
    while candidate > after:
        if len(found) >= limit:
            more = True
            break
        found.append(candidate.astimezone(UTC))
        candidate = itr.get_prev(datetime)
    found.reverse()
    split = max(len(found) - catch_up, 0)
    return found[split:], found[:split], more
