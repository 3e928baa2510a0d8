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
from jobsys.errors import ConfigError
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


def _throttled_config(tmp_path: Path, body: str) -> Path:
    config_dir = tmp_path / "config"
    config_dir.mkdir()
    for name in ("queues.yaml", "schedule.yaml"):
        text = (REPO / "config" / name).read_text()
        if name == "queues.yaml":
            text = text.replace("\nthrottle: {}\n", "\nthrottle:\n" + body)
        (config_dir / name).write_text(text)
    return config_dir


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "  profiles: {per_key: acount_id, rate: 20/m}\n",
            "throttle.profiles.per_key: no task of queue 'profiles' takes an argument "
            "'acount_id' (did you mean 'account_id'?); every job would share one key",
        ),
        (
            "  t.keyed: {per_key: acount, concurrency: 1}\n",
            "throttle.t.keyed.per_key: task 't.keyed' does not take an argument 'acount' "
            "(did you mean 'account_id'?)",
        ),
    ],
)
def test_a_misspelt_per_key_is_refused(
    registered: list[str], tmp_path: Path, body: str, message: str
) -> None:
    """A per_key no task of the entry takes is in no job's args: every job would share
    the one key of the missing argument, and a limit meant per account would hold the
    whole queue to it. config check used to say OK."""

    @tasks.task(queue="profiles", name="t.keyed")
    def keyed(account_id: int) -> None: ...

    registered.append("t.keyed")
    config_dir = _throttled_config(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load(config_dir, task_checker=task_problems)
    found = [p for p in info.value.problems if ".per_key: " in p]
    assert len(found) == 1, info.value.problems
    problem = found[0]
    assert message in problem
    assert problem.split(": ")[0].endswith("queues.yaml:" + str(_line_of(config_dir, body)))


def _line_of(config_dir: Path, body: str) -> int:
    lines = (config_dir / "queues.yaml").read_text().splitlines()
    return lines.index(body.rstrip("\n")) + 1


def test_a_per_key_some_task_of_the_queue_takes_is_accepted(
    registered: list[str], tmp_path: Path
) -> None:
    @tasks.task(queue="profiles", name="t.keyed")
    def keyed(account_id: int) -> None: ...

    @tasks.task(queue="profiles", name="t.unkeyed")
    def unkeyed() -> None: ...

    registered.extend(["t.keyed", "t.unkeyed"])
    config_dir = _throttled_config(tmp_path, "  profiles: {per_key: account_id, rate: 20/m}\n")
    problems = task_problems(
        config_dir, load(config_dir).schedule, None, None, load(config_dir).queues, None
    )
    assert not [p for p in problems if ".per_key: " in p], problems


def test_a_decorators_misspelt_per_key_is_refused(registered: list[str]) -> None:
    @tasks.task(queue="profiles", name="t.deco", rate="5/s", per_key="acount_id")
    def deco(account_id: int) -> None: ...

    registered.append("t.deco")
    line = inspect.getsourcelines(deco)[1]
    config = load(REPO / "config")
    problems = task_problems(config.directory, config.schedule, set(config.all_queues), None)
    (problem,) = [p for p in problems if "'t.deco'" in p]
    assert problem == (
        f"tests/unit/test_flow_task_limits.py:{line}: task 't.deco': per_key: it does not "
        "take an argument 'acount_id' (did you mean 'account_id'?); every job would share "
        "one key"
    )
