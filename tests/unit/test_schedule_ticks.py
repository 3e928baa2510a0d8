"""Pure tick math (``cron.due_ticks``) and the injectable host clock."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from jobsys import clock, cron
from jobsys.cron import due_ticks, timezone_of

NOON = datetime(2026, 3, 2, 12, 0, 0, 400_000, tzinfo=UTC)


def test_ticks_in_window_split_into_catch_up_and_missed() -> None:
    enqueue, missed, more = due_ticks(
        "* * * * * *",
        timezone_of("UTC"),
        after=NOON - timedelta(seconds=5),
        until=NOON,
        catch_up=2,
        max_missed=100,
    )
    whole = NOON.replace(microsecond=0)
    assert enqueue == [whole - timedelta(seconds=1), whole]
    assert missed == [whole - timedelta(seconds=s) for s in (4, 3, 2)]
    assert more is False


def test_window_is_open_at_the_high_water_mark() -> None:
    whole = NOON.replace(microsecond=0)
    assert due_ticks(
        "* * * * * *", timezone_of("UTC"), after=whole, until=whole, catch_up=1, max_missed=9
    ) == ([], [], False)


def test_long_downtime_is_bounded_and_says_so() -> None:
    enqueue, missed, more = due_ticks(
        "* * * * *",
        timezone_of("UTC"),
        after=NOON - timedelta(days=30),
        until=NOON,
        catch_up=1,
        max_missed=50,
    )
    assert len(enqueue) == 1 and len(missed) == 50 and more is True
    assert enqueue[0] == NOON.replace(second=0, microsecond=0)


def test_catch_up_zero_enqueues_nothing_and_records_everything() -> None:
    enqueue, missed, _ = due_ticks(
        "0 * * * *",
        timezone_of("UTC"),
        after=NOON - timedelta(hours=3),
        until=NOON,
        catch_up=0,
        max_missed=10,
    )
    assert enqueue == [] and len(missed) == 3


def test_timezone_is_honoured_across_dst() -> None:
    # 02:30 Europe/Paris does not exist on 2026-03-29 (clocks jump 02:00 -> 03:00).
    tz = timezone_of("Europe/Paris")
    start = datetime(2026, 3, 27, 12, tzinfo=UTC)
    enqueue, missed, _ = due_ticks(
        "30 2 * * *",
        tz,
        after=start,
        until=start + timedelta(days=4),
        catch_up=10,
        max_missed=0,
    )
    # Each day once, in Paris time; the missing 02:30 fires at 03:00 local (croniter).
    assert [t.isoformat() for t in enqueue] == [
        "2026-03-28T01:30:00+00:00",
        "2026-03-29T01:00:00+00:00",
        "2026-03-30T00:30:00+00:00",
        "2026-03-31T00:30:00+00:00",
    ]
    assert missed == []


def test_clock_offset_is_read_at_each_call(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(clock.OFFSET_ENV, "-90")
    behind = clock.now()
    monkeypatch.setenv(clock.OFFSET_ENV, "90")
    ahead = clock.now()
    assert 179 < (ahead - behind).total_seconds() < 181
    monkeypatch.setenv(clock.OFFSET_ENV, "garbage")
    assert abs((clock.now() - datetime.now(UTC)).total_seconds()) < 1


def test_five_field_cron_fires_once_per_minute_not_every_second_of_it() -> None:
    """A scheduler pass every few seconds inside a matching minute enqueues nothing new:
    "* * * * *" fires at :00 only (croniter.match would say every second matches)."""
    t = datetime(2026, 11, 29, 4, 56, 54, tzinfo=UTC)
    for seconds in range(1, 66):
        until = t + timedelta(seconds=seconds)
        enqueue, missed, _ = cron.due_ticks(
            "* * * * *",
            UTC,
            after=until - timedelta(seconds=1),
            until=until,
            catch_up=1,
            max_missed=10,
        )
        expected = [until] if until.second == 0 else []
        assert (enqueue, missed) == (expected, []), until
    # The hourly entry inside 05:00: one tick at 05:00:00, none at 05:00:05.
    hour = datetime(2026, 11, 29, 5, 0, 0, tzinfo=UTC)
    args = {"catch_up": 1, "max_missed": 10}
    assert cron.due_ticks("0 * * * *", UTC, after=hour - timedelta(seconds=5), until=hour, **args)[
        0
    ] == [hour]
    assert (
        cron.due_ticks("0 * * * *", UTC, after=hour, until=hour + timedelta(seconds=5), **args)[0]
        == []
    )
    # Six fields (seconds): every second is a tick.
    assert cron.due_ticks(
        "* * * * * *", UTC, after=hour, until=hour + timedelta(seconds=3), **args
    )[0:2] == (
        [hour + timedelta(seconds=3)],
        [hour + timedelta(seconds=1), hour + timedelta(seconds=2)],
    )


def test_previous_fire_is_the_minute_not_the_second() -> None:
    at = datetime(2026, 11, 29, 4, 56, 59, tzinfo=UTC)
    assert cron.previous_fire("* * * * *", at, UTC) == datetime(2026, 11, 29, 4, 56, tzinfo=UTC)
    on_time = datetime(2026, 11, 29, 4, 57, tzinfo=UTC)
    assert cron.previous_fire("* * * * *", on_time, UTC) == on_time
