"""DEMO: the simulated AI service's up/down cycle (pure)."""

from __future__ import annotations

import pytest

from jobsys.demo.ai_service import (
    DOWN_SECONDS,
    FIRST_OUTAGE_AFTER_SECONDS,
    UP_SECONDS,
    Cycle,
)


def test_default_cycle_first_outage_after_three_minutes_then_every_ten() -> None:
    assert (FIRST_OUTAGE_AFTER_SECONDS, DOWN_SECONDS, UP_SECONDS) == (180, 120, 480)
    cycle = Cycle()
    assert cycle.describe() == "first outage after 3 min, then down 2 min every 10 min"


@pytest.mark.parametrize(
    ("elapsed", "up"),
    [
        (0, True),
        (179.9, True),
        (180, False),  # first outage
        (299.9, False),
        (300, True),  # back for 8 minutes
        (779.9, True),
        (780, False),  # second outage, 10 minutes after the first
        (900, True),
    ],
)
def test_default_cycle(elapsed: float, up: bool) -> None:
    assert Cycle().is_up(elapsed) is up


def test_short_cycle() -> None:
    cycle = Cycle(first_outage_after_seconds=1, down_seconds=2, up_seconds=3)
    assert [cycle.is_up(t) for t in range(0, 12)] == [
        True, False, False, True, True, True, False, False, True, True, True, False,
    ]  # fmt: skip
