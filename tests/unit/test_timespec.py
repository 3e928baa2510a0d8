"""The one grammar for durations and times on the command line (``jobsys.timespec``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobsys.errors import UsageError
from jobsys.timespec import parse_duration, parse_iso, parse_time

NOW = datetime(2026, 2, 20, 3, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("90s", 90),
        ("90 sec", 90),
        ("15m", 900),
        ("15min", 900),
        ("2H", 7200),
        ("1.5d", 129600),
        ("1w", 604800),
        ("1h30m", 5400),
        ("1d 12h", 129600),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "--for") == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text", ["", "2", "0s", "-2h", "2 fortnights", "h", "101000d", "1h30", "h30m"]
)
def test_bad_durations_name_the_option_and_value(text: str) -> None:
    with pytest.raises(UsageError, match=f"--for {text!r} is (not a duration|out of range)"):
        parse_duration(text, "--for")


def test_bare_seconds_and_zero_only_when_asked() -> None:
    assert parse_duration("30", "--in", unit_required=False) == timedelta(seconds=30)
    assert parse_duration("0", "--in", unit_required=False, allow_zero=True) == timedelta(0)
    with pytest.raises(UsageError, match="out of range: more than 0, at most 100 years"):
        parse_duration("0", "--in", unit_required=False)


def test_times_are_a_duration_back_or_iso_utc() -> None:
    assert parse_time("2h", "--since", NOW) == NOW - timedelta(hours=2)
    assert parse_time("2026-02-19T10:00:00", "--since", NOW) == datetime(
        2026, 2, 19, 10, tzinfo=UTC
    )
    assert parse_iso("2026-02-19T12:00:00+02:00", "--at") == datetime(2026, 2, 19, 10, tzinfo=UTC)
    with pytest.raises(UsageError, match="--until 'soon' is neither a duration nor an ISO"):
        parse_time("soon", "--until", NOW)
    with pytest.raises(UsageError, match="--at 'tomorrow' is not an ISO-8601 time"):
        parse_iso("tomorrow", "--at")
