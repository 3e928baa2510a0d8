"""Flow limits, pure parts: the rate grammar, the config's checks, the claim's choice."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jobsys.config import load
from jobsys.config.models import parse_rate
from jobsys.errors import ConfigError
from jobsys.flow.limits import (
    CONCURRENCY_RECHECK_SECONDS,
    RATE_LEAD_SECONDS,
    RATE_MARGIN_SECONDS,
    BucketState,
    Limit,
    decide,
    for_lane,
    limits_of,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("text", "parsed"),
    [("30/m", (30, 60.0)), ("5/s", (5, 1.0)), ("100 / h", (100, 3600.0)),
     ("10/30s", (10, 30.0)), ("1/day", (1, 86400.0)), ("2/1.5min", (2, 90.0))],
)  # fmt: skip
def test_rates(text: str, parsed: tuple[int, float]) -> None:
    assert parse_rate(text) == parsed


@pytest.mark.parametrize("text", ["0/m", "-1/m", "5", "5/fortnight", "five/m", "5/0s", ""])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError):
        parse_rate(text)


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    return target


def add_throttle(cfg_dir: Path, body: str) -> None:
    path = cfg_dir / "queues.yaml"
    text = path.read_text()
    assert "\nthrottle: {}\n" in text
    path.write_text(text.replace("\nthrottle: {}\n", "\nthrottle:\n" + body))


def test_throttles_load(cfg_dir: Path) -> None:
    add_throttle(
        cfg_dir,
        "  profiles: {per_key: account_id, rate: 10/m, concurrency: 2}\n"
        "  demo.refresh_profile: {rate: 30/m}\n",
    )
    config = load(cfg_dir)
    limits = limits_of(config)
    assert [(x.kind, x.target, x.per_key, x.rate, x.concurrency) for x in limits] == [
        ("task", "demo.refresh_profile", None, (30, 60.0), None),
        ("queue", "profiles", "account_id", (10, 60.0), 2),
    ]
    assert [x.target for x in for_lane(config, config.lanes["base"])] == [
        "demo.refresh_profile", "profiles"
    ]  # fmt: skip
    assert [x.target for x in for_lane(config, config.lanes["ai"])] == ["demo.refresh_profile"]
    assert for_lane(load(REPO / "config"), config.lanes["base"]) == []


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("  profiles: {rate: 0/m}\n", "throttle.profiles.rate: rate '0/m' must allow at least 1"),
        ("  profiles: {rate: 10/fortnight}\n", "throttle.profiles.rate: rate '10/fortnight'"),
        ("  profiles: {concurrency: 0}\n", "throttle.profiles.concurrency: input should be"),
        ("  profiles: {concurrency: -2}\n", "throttle.profiles.concurrency: input should be"),
        ("  profiles: {per_key: account_id}\n", "give rate, concurrency or both"),
        ("  profiles: {per_key: 'account id', rate: 1/s}\n", "is not an argument name"),
        ("  profils: {rate: 1/s}\n", "throttle.profils: not a queue of any lane nor a task "
                                     "name (module.name) (did you mean 'profiles'"),
    ],
)  # fmt: skip
def test_bad_throttles_name_file_and_line(cfg_dir: Path, body: str, message: str) -> None:
    lines = len((cfg_dir / "queues.yaml").read_text().splitlines()) - 1
    add_throttle(cfg_dir, body)
    with pytest.raises(ConfigError) as info:
        load(cfg_dir)
    found = [p for p in info.value.problems if message in p]
    assert found, info.value.problems
    where = found[0].split(": ")[0]
    assert where.endswith(f"queues.yaml:{lines + 3}") or where.endswith(f"queues.yaml:{lines + 2}")


KEYED = Limit("queue", "q", "account_id", (2, 1.0), 3)


def test_decide_takes_within_limits_and_passes_over_full_keys() -> None:
    candidates = [(1, "queue:q:a"), (2, "queue:q:a"), (3, "queue:q:a"), (4, "queue:q:b"),
                  (5, None), (6, "queue:q:b")]  # fmt: skip
    decision = decide(candidates, {}, [KEYED], slots=10)
    assert decision.ids == [1, 2, 4, 5, 6]  # a: 2 per window; b: 2; 5 has no limit
    assert decision.full == {"queue:q:a": pytest.approx(0.0)} or "queue:q:a" in decision.full
    assert decision.ids[:3] == [1, 2, 4]
    assert decide(candidates, {}, [KEYED], slots=2).ids == [1, 2]


def test_decide_concurrency() -> None:
    limit = Limit("queue", "q", "account_id", None, 2)
    states = {"queue:q:a": BucketState(running=2), "queue:q:b": BucketState(running=1)}
    decision = decide([(1, "queue:q:a"), (2, "queue:q:b"), (3, "queue:q:b")], states,
                      [limit], slots=10)  # fmt: skip
    assert decision.ids == [2]
    assert decision.full == {
        "queue:q:a": CONCURRENCY_RECHECK_SECONDS, "queue:q:b": CONCURRENCY_RECHECK_SECONDS
    }  # fmt: skip


def test_decide_rate_window_and_lead() -> None:
    limit = Limit("queue", "q", None, (2, 1.0), None)
    window = limit.window_seconds
    assert window == 1.0 + RATE_MARGIN_SECONDS
    # Two starts 0.9 s and 0.1 s ago: the first leaves the window in ~0.12 s, within
    # the lead: taken, not to start before then; the second leaves in ~0.92 s: full.
    states = {"queue:q:": BucketState(running=0, recent=(-0.9, -0.1))}
    decision = decide([(1, "queue:q:"), (2, "queue:q:")], states, [limit], slots=5)
    assert decision.ids == [1]
    assert decision.not_before[1] == pytest.approx(-0.9 + window)
    assert decision.full["queue:q:"] == pytest.approx(-0.1 + window - RATE_LEAD_SECONDS)
    # Nothing recent: the limit's count goes at once, the next waits a whole window.
    fresh = decide([(1, "queue:q:"), (2, "queue:q:"), (3, "queue:q:")], {}, [limit], slots=5)
    assert fresh.ids == [1, 2] and fresh.not_before == {}
    assert fresh.full["queue:q:"] == pytest.approx(window - RATE_LEAD_SECONDS)


def test_the_engine_worker_rechecks_concurrency_as_flow_decides() -> None:
    from jobsys.engine import worker

    assert worker.CONCURRENCY_RECHECK_SECONDS == CONCURRENCY_RECHECK_SECONDS


def test_an_unknown_throttle_name_is_said_beside_other_problems(cfg_dir: Path) -> None:
    """`config check` said only the bad rate (or a typo elsewhere in queues.yaml, such
    as `base.concurency`), and the misspelt throttle queue once that was fixed: one
    problem a run, where the README promises every problem at once (operator
    walk-through, story 2). Names are checked on the file as written."""
    add_throttle(cfg_dir, "  story_downloads: {rate: 20/mn}\n  profils: {concurrency: 2}\n")
    path = cfg_dir / "queues.yaml"
    path.write_text(path.read_text().replace("\nbase:\n", "\nbase:\n  concurency: 3\n", 1))
    path.write_text(
        path.read_text().replace("\nhealth:\n", "\nhealth:\n  queue_overrides:\n    sycn: {}\n", 1)
    )
    with pytest.raises(ConfigError) as info:
        load(cfg_dir)
    said = "\n".join(info.value.problems)
    assert "base.concurency: unknown key" in said
    assert "throttle.story_downloads.rate: rate '20/mn'" in said
    assert "throttle.profils: not a queue of any lane" in said
    assert "health.queue_overrides.sycn: unknown queue (did you mean 'sync'?)" in said
