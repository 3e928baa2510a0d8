"""Queue order inside a lane (``order: strict`` / ``weights``): the draw and the config."""

from __future__ import annotations

import random
import shutil
from collections import Counter
from pathlib import Path

import pytest

from jobsys.config import load
from jobsys.config.loader import LaneSpec
from jobsys.errors import ConfigError
from jobsys.flow.order import claim_order, weighted_order

REPO = Path(__file__).resolve().parents[2]


def test_weighted_order_leads_in_proportion_to_the_weights() -> None:
    rng = random.Random(7)
    queues, weights = ("a", "b", "c"), (6, 3, 1)
    leads = Counter(weighted_order(queues, weights, rng)[0] for _ in range(20_000))
    for queue, weight in zip(queues, weights, strict=True):
        assert abs(leads[queue] / 20_000 - weight / 10) < 0.02, leads
    # Every draw is a permutation: a queue with nothing due never holds others back.
    assert all(sorted(weighted_order(queues, weights, rng)) == ["a", "b", "c"] for _ in range(50))


def test_claim_order_by_lane_order() -> None:
    rng = random.Random(1)
    lane = LaneSpec("base", ("sync", "default"), 4, 60.0)
    assert claim_order(lane, rng) == (["sync", "default"], False)
    strict = LaneSpec("base", ("sync", "default"), 4, 60.0, order="strict")
    assert claim_order(strict, rng) == (["sync", "default"], True)
    weights = LaneSpec("base", ("sync", "default"), 4, 60.0, order="weights", weights=(1, 0))
    assert claim_order(weights, rng) == (["sync", "default"], True)  # weight 0 never leads


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    return target


def set_base(cfg_dir: Path, lines: str) -> None:
    path = cfg_dir / "queues.yaml"
    text = path.read_text()
    marker = "  timeout_seconds: 600\n"
    assert marker in text
    path.write_text(text.replace(marker, marker + lines, 1))


def test_order_and_weights_load(cfg_dir: Path) -> None:
    set_base(cfg_dir, "  order: weights\n  weights: {sync: 5, default: 2}\n")
    lane = load(cfg_dir).lanes["base"]
    assert lane.order == "weights"
    assert dict(zip(lane.queues, lane.weights, strict=True))["sync"] == 5
    assert dict(zip(lane.queues, lane.weights, strict=True))["profiles"] == 1
    assert load(REPO / "config").lanes["base"].order == "priority"  # default unchanged


@pytest.mark.parametrize(
    ("lines", "message", "line"),
    [
        ("  order: ordered\n", "base.order: input should be 'priority', 'strict' or 'weights'",
         "15"),
        ("  order: weights\n  weights: {sync: 0}\n", "base.weights.sync: input should be", "16"),
        ("  weights: {sync: 2}\n", "base.weights: weights apply only with order: weights", "15"),
        ("  order: weights\n  weights: {snyc: 2}\n",
         "base.weights.snyc: 'snyc' is not a queue of this lane (did you mean 'sync'?)", "16"),
    ],
)  # fmt: skip
def test_bad_order_config_names_file_and_line(
    cfg_dir: Path, lines: str, message: str, line: str
) -> None:
    set_base(cfg_dir, lines)
    with pytest.raises(ConfigError) as info:
        load(cfg_dir)
    found = [p for p in info.value.problems if message in p]
    assert found, info.value.problems
    assert found[0].split(":")[0].endswith("queues.yaml")
    assert found[0].split(":")[1] == line  # lines added under timeout_seconds (line 14)
