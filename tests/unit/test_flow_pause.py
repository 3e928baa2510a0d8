"""Pure parts of queue pauses: what a name means, and how a pause explains itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobsys.config.loader import load
from jobsys.errors import UsageError
from jobsys.flow.service import ALL_TARGET, targets, why_paused
from jobsys.timespec import coarse

CONFIG = load(Path(__file__).resolve().parents[2] / "config")


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (59.4, "59s"), (60, "1m"), (3599, "59m"), (3600, "1h"), (3720, "1h02m"),
     (86400, "1d"), (90000, "1d01h"), (-5, "0s")],
)  # fmt: skip
def test_coarse_duration(seconds: float, text: str) -> None:
    assert coarse(seconds) == text


def test_a_name_is_a_queue_or_a_lane() -> None:
    assert targets(CONFIG, "sync", every=False) == ("sync", ["sync"])
    assert targets(CONFIG, "ai_face_queue", every=False) == ("ai_face_queue", ["ai_face_queue"])
    target, queues = targets(CONFIG, "base", every=False)
    assert target == "base" and queues[0] == "sync" and len(queues) == 9
    assert targets(CONFIG, None, every=True) == (ALL_TARGET, list(CONFIG.all_queues))


@pytest.mark.parametrize(
    ("name", "every", "message"),
    [
        ("sycn", False, "unknown queue or lane 'sycn' (did you mean 'sync'?)"),
        ("bsae", False, "unknown queue or lane 'bsae' (did you mean 'base'?)"),
        (None, False, "name a queue or lane, or give --all"),
        ("sync", True, "not both"),
    ],
)
def test_bad_names_are_usage_errors(name: str | None, every: bool, message: str) -> None:
    with pytest.raises(UsageError) as info:
        targets(CONFIG, name, every=every)
    assert message in info.value.message
    assert info.value.exit_code == 2


def test_why_paused_says_who_when_why_and_until_when() -> None:
    pause = {"queue": "story_downloads", "paused_seconds": 185.0, "paused_by": "alice",
             "target": "story_downloads", "reason": "upstream 429",
             "remaining_seconds": 1620.0}  # fmt: skip
    assert why_paused(pause) == ("queue paused 3m ago by alice: upstream 429 (resumes in 27m)")
    lane = {**pause, "target": "base", "reason": None, "remaining_seconds": None}
    assert why_paused(lane) == "queue paused 3m ago by alice (lane base)"
    everything = {**lane, "target": ALL_TARGET}
    assert why_paused(everything) == "queue paused 3m ago by alice (all queues)"
