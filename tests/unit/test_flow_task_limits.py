"""Flow limits declared on the task (``@task(rate=..., concurrency=..., per_key=...)``):
the claim's limits include them, queues.yaml's ``throttle`` overrides them, and
``config check`` names the decorator's file:line for a value it refuses."""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobsys import tasks
from jobsys.config import load
from jobsys.config.application import task_problems
from jobsys.flow.limits import bucket_of, limits_of, policy_for_lane

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def registered() -> Iterator[list[str]]:
    names: list[str] = []
    yield names
    for name in names:
        tasks.unregister(name)


def test_a_tasks_own_limits_join_the_lanes_claim(registered: list[str]) -> None:
    @tasks.task(queue="profiles", name="t.rated", rate="5/s", per_key="account_id")
    def rated(account_id: int) -> None: ...

    @tasks.task(queue="sync", name="t.capped", concurrency=3)
    def capped() -> None: ...

    registered.extend(["t.rated", "t.capped"])
    config = load(REPO / "config")
    limits = {x.target: x for x in limits_of(config)}
    assert limits["t.rated"].kind == "task"
    assert (limits["t.rated"].rate, limits["t.rated"].per_key) == ((5, 1.0), "account_id")
    assert (limits["t.capped"].concurrency, limits["t.capped"].rate) == (3, None)
    found = bucket_of("t.rated", "profiles", {"account_id": 42}, limits_of(config))
    assert found is not None and found[1] == "task:t.rated:42"
    policy = policy_for_lane(config, config.lanes["base"])
    assert policy is not None
    assert {x.target for x in policy.limits} >= {"t.rated", "t.capped"}


def test_queues_yaml_wins_over_the_decorator(registered: list[str], tmp_path: Path) -> None:
    @tasks.task(queue="profiles", name="t.both", rate="5/s")
    def both() -> None: ...

    registered.append("t.both")
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    for name in ("queues.yaml", "schedule.yaml"):
        text = (REPO / "config" / name).read_text()
        if name == "queues.yaml":
            text = text.replace("\nthrottle: {}\n", "\nthrottle:\n  t.both: {rate: 1/m}\n")
        (config_dir / name).write_text(text)
    (limit,) = [x for x in limits_of(load(config_dir)) if x.target == "t.both"]
    assert limit.rate == (1, 60.0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rate": "0/m"}, "rate: rate '0/m' must allow at least 1 start"),
        ({"rate": "fast"}, "rate: rate 'fast' is not N/unit"),
        ({"concurrency": 0}, "concurrency: Input should be greater than or equal to 1"),
        ({"per_key": "account_id"}, "give rate, concurrency or both"),
    ],
)
def test_config_check_names_the_decorators_file_and_line(
    registered: list[str], options: dict[str, object], message: str
) -> None:
    @tasks.task(queue="profiles", name="t.bad", **options)  # type: ignore[call-overload]
    def bad() -> None: ...

    registered.append("t.bad")
    line = inspect.getsourcelines(bad)[1]
    config = load(REPO / "config")
    problems = task_problems(config.directory, config.schedule, set(config.all_queues), None)
    (problem,) = [p for p in problems if "'t.bad'" in p]
    assert problem.startswith(f"tests/unit/test_flow_task_limits.py:{line}: task 't.bad': ")
    assert message in problem
    assert all(x.target != "t.bad" for x in limits_of(config))  # refused: not enforced
