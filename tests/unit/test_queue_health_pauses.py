"""Queue health (``jobsys.issues.health.evaluate``, pure): a paused queue's waiting
jobs are no alarm, neither for the queue nor for its lane's ``no_worker``; its
failure rate and stalled jobs still are. Once it is resumed, its oldest wait counts
from the end of the pause."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from jobsys.config.loader import load
from jobsys.config.models import Health, QueueThresholds
from jobsys.issues.health import evaluate

BASE = load(Path(__file__).resolve().parents[2] / "config")
TIGHT = QueueThresholds(
    max_waiting=3, max_oldest_wait_seconds=60, max_failure_rate=0.5, min_finished_for_rate=4
)
CONFIG = dataclasses.replace(
    BASE, queues=BASE.queues.model_copy(update={"health": Health(queues=TIGHT)})
)
# profiles and sync are queues of the base lane; no worker serves any lane.
WAITING = {"profiles": (10, 900.0), "sync": (2, 30.0)}
OUTCOMES = {"profiles": (5, 8)}
STALLED = {"profiles": 1}


def _signals(paused: set[str]) -> dict[str, float]:
    breaches = evaluate(CONFIG, WAITING, OUTCOMES, STALLED, set(), paused)
    return {b.fingerprint: b.value for b in breaches}


def test_an_unpaused_queue_alarms_on_its_waiting_jobs() -> None:
    assert _signals(set()) == {
        "queue_health:profiles:waiting": 10,
        "queue_health:profiles:oldest_wait": 900.0,
        "queue_health:profiles:failure_rate": 0.625,
        "queue_health:profiles:stalled": 1,
        "queue_health:lane:base:no_worker": 12,
    }


def test_a_paused_queue_alarms_only_on_failures_and_stalled_jobs() -> None:
    assert _signals({"profiles"}) == {
        "queue_health:profiles:failure_rate": 0.625,
        "queue_health:profiles:stalled": 1,
        # sync's 2 jobs still wait for a worker the lane does not have
        "queue_health:lane:base:no_worker": 2,
    }


def test_a_lane_whose_waiting_queues_are_all_paused_has_no_worker_alarm() -> None:
    assert _signals({"profiles", "sync"}) == {
        "queue_health:profiles:failure_rate": 0.625,
        "queue_health:profiles:stalled": 1,
    }


def test_a_pause_of_another_queue_changes_nothing() -> None:
    assert _signals({"messages"}) == _signals(set())


def test_a_resumed_queue_counts_its_oldest_wait_from_the_end_of_the_pause() -> None:
    # profiles' oldest job is 900 s old, but the queue was resumed 30 s ago
    breaches = evaluate(CONFIG, WAITING, {}, {}, {"base"}, set(), {"profiles": 30.0})
    assert {b.fingerprint: b.value for b in breaches} == {"queue_health:profiles:waiting": 10}


def test_a_backlog_still_waiting_after_the_threshold_since_the_resume_alarms() -> None:
    breaches = evaluate(CONFIG, WAITING, {}, {}, {"base"}, set(), {"profiles": 75.0})
    (oldest,) = [b for b in breaches if b.signal == "oldest_wait"]
    assert oldest.value == 75.0
    assert oldest.title == (
        "queue profiles: oldest job waiting 75s since the queue's pause ended (threshold 60s)"
    )


def test_a_pause_that_ended_before_the_oldest_job_was_ready_changes_nothing() -> None:
    ended = {"profiles": 5000.0, "sync": 10.0}
    assert evaluate(CONFIG, WAITING, {}, {}, {"base"}, set(), ended) == evaluate(
        CONFIG, WAITING, {}, {}, {"base"}, set()
    )
