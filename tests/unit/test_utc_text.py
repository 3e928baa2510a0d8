"""Times labelled UTC are converted to UTC first (review of 2026-12-06, finding 3)."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from jobsys.clock import utc_text
from jobsys.errors import unchanged

# What psycopg returns for 21:42 UTC on a session whose TimeZone is America/New_York.
NEW_YORK = datetime(2026, 12, 6, 16, 42, 7, tzinfo=ZoneInfo("America/New_York"))


def test_an_aware_time_is_converted_before_it_is_labelled() -> None:
    assert utc_text(NEW_YORK) == "2026-12-06 21:42 UTC"
    assert utc_text(NEW_YORK, "%Y-%m-%d %H:%M:%S") == "2026-12-06 21:42:07 UTC"
    assert utc_text(datetime(2026, 12, 6, 21, 42)) == "2026-12-06 21:42 UTC"  # naive: UTC


def test_nothing_was_changed_says_who_and_when_in_utc() -> None:
    said = unchanged("every_minute", "already paused", who="by alice", at=NEW_YORK)
    assert said == (
        "every_minute is already paused (by alice at 2026-12-06 21:42 UTC); nothing was changed"
    )
