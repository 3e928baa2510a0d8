"""The one loop of the worker's periodic services (``jobsys.periodic.Periodic``):
passes given ``now``, consecutive errors counted, reset by a good pass, raised at the
limit, never when there is none."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

import pytest

from jobsys.periodic import Periodic


class Scripted(Periodic):
    """Passes that fail or succeed as scripted; stops the loop after the script."""

    name = "scripted"

    def __init__(self, script: list[bool], stop: asyncio.Event, limit: int | None) -> None:
        super().__init__()
        self.script = list(script)
        self.stop = stop
        self.max_consecutive_errors = limit
        self.seen: list[datetime] = []

    def interval_seconds(self) -> float:
        return 0.0

    async def run_pass(self, app: Any, now: datetime) -> int:
        self.seen.append(now)
        ok = self.script.pop(0)
        if not self.script:
            self.stop.set()
        if not ok:
            raise RuntimeError("boom")
        return len(self.seen)


async def test_errors_are_counted_and_a_good_pass_resets_them(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    service = Scripted([False, False, True, False], stop, limit=3)
    with caplog.at_level(logging.WARNING, logger="jobsys.periodic"):
        await asyncio.wait_for(service.run(None, stop), 5)
    assert (service.passes, service.consecutive_errors, service.last_result) == (1, 1, 3)
    assert [r.consecutive_errors for r in caplog.records] == [1, 2, 1]  # type: ignore[attr-defined]
    assert {r.action for r in caplog.records} == {"scripted_error"}  # type: ignore[attr-defined]
    assert all(isinstance(t, datetime) and t.tzinfo is not None for t in service.seen)


async def test_the_limit_of_errors_in_a_row_raises() -> None:
    stop = asyncio.Event()
    service = Scripted([True, False, False, True], stop, limit=2)
    with pytest.raises(RuntimeError, match="boom"):
        await asyncio.wait_for(service.run(None, stop), 5)
    assert (service.passes, service.consecutive_errors) == (1, 2)


async def test_without_a_limit_it_never_raises() -> None:
    stop = asyncio.Event()
    service = Scripted([False] * 5, stop, limit=None)
    await asyncio.wait_for(service.run(None, stop), 5)
    assert (service.passes, service.consecutive_errors) == (0, 5)


class Fixed(Periodic):
    """A service with a fixed period (the reaper, failure maintenance, metrics ticker)."""

    async def run_pass(self, app: Any, now: datetime) -> None:
        return None


def test_a_fixed_interval_given_at_construction_is_the_period() -> None:
    assert Fixed(2.5).interval_seconds() == 2.5
    # Refused when built, before any pass could run.
    with pytest.raises(TypeError, match="Fixed has no interval"):
        Fixed()
