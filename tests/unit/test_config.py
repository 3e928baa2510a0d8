"""Configuration loading and validation (no database)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from jobsys.config import load
from jobsys.config.application import load_config
from jobsys.errors import ConfigError
from jobsys.settings import Settings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cfg_dir(tmp_path: Path) -> Path:
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    return target


def problems_of(directory: Path, *, with_tasks: bool = False) -> list[str]:
    with pytest.raises(ConfigError) as info:
        if with_tasks:
            load_config(Settings(config_dir=directory), with_tasks=True)
        else:
            load(directory)
    return info.value.problems


def test_shipped_config_is_valid() -> None:
    config = load_config(Settings(config_dir=REPO / "config"))
    assert list(config.lanes) == [
        "base",
        "ai",
        "ai_visual_queue",
        "ai_face_queue",
        "ai_ocr_queue",
        "video_processing_queue",
        "ai_metadata_queue",
        "frame_generation",
    ]
    assert config.lanes["base"].queues == (
        "sync",
        "engagements",
        "story_downloads",
        "post_downloads",
        "profiles",
        "messages",
        "avatars",
        "maintenance",
        "default",
    )
    assert config.lanes["ai_face_queue"].queues == ("ai_face_queue",)
    assert config.queue_to_lane["profiles"] == "base"


def test_every_planted_error_is_reported_with_file_line_and_key(cfg_dir: Path) -> None:
    queues = cfg_dir / "queues.yaml"
    text = queues.read_text()
    text = text.replace(
        "  ai_face_queue:\n    concurrency: 2", "  ai_face_queue:\n    concurrency: 0"
    )
    text = text.replace("  ai_ocr_queue:\n", "  ai_ocr_queue:\n    concurency: 3\n")
    text = text.replace("    - default\n", "    - default\n    - Bad-Name\n")
    queues.write_text(text)
    schedule = cfg_dir / "schedule.yaml"
    stext = schedule.read_text()
    stext = stext.replace('cron: "*/15 * * * *"', 'cron: "61 * * * *"')
    stext = stext.replace('cron: "20 * * * *"', 'cron: "0 0 30 2 *"')
    stext = stext.replace("      queue: avatars", "      queue: avatarz")
    schedule.write_text(stext)

    problems = problems_of(cfg_dir)
    joined = "\n".join(problems)
    assert len(problems) == 6, joined
    lines = queues.read_text().splitlines()
    face_line = next(i for i, ln in enumerate(lines, 1) if "concurrency: 0" in ln)
    assert f"queues.yaml:{face_line}: capsules.ai_face_queue.concurrency:" in joined
    assert "capsules.ai_ocr_queue.concurency: unknown key (did you mean 'concurrency'?)" in joined
    assert "base.queues.9: 'Bad-Name' must match [a-z0-9_]{1,40}" in joined
    assert "entries.story_auto_replies.cron: invalid cron expression '61 * * * *'" in joined
    assert (
        "entries.recent_profile_post_scans.cron: cron expression '0 0 30 2 *' never fires" in joined
    )
    assert (
        "entries.avatar_sync.fanout.queue: unknown queue 'avatarz' (did you mean 'avatars'?)"
        in joined
    )
    for line in problems:
        assert (
            line.startswith("config/queues.yaml:")
            or "schedule.yaml:" in line
            or "queues.yaml:" in line
        )


@pytest.mark.parametrize(
    "cron",
    ["61 * * * *", "* * *", "0 0 30 2 *", "*/0 * * * *", "1-100000 * * * *", "0 0 * * 8", ""],
)
def test_bad_cron_is_rejected(cfg_dir: Path, cron: str) -> None:
    schedule = cfg_dir / "schedule.yaml"
    schedule.write_text(schedule.read_text().replace('cron: "15 4 * * *"', f'cron: "{cron}"'))
    problems = problems_of(cfg_dir)
    assert len(problems) == 1
    assert "entries.purge_expired_post_media.cron:" in problems[0]


def test_queue_served_by_two_lanes(cfg_dir: Path) -> None:
    queues = cfg_dir / "queues.yaml"
    queues.write_text(
        queues.read_text().replace(
            "  ai:                       # legacy lane\n", "  ai:\n    queues: [ai, sync]\n"
        )
    )
    problems = problems_of(cfg_dir)
    assert any("queue 'sync' is already served by lane 'base'" in p for p in problems), problems


def test_unknown_timezone(cfg_dir: Path) -> None:
    schedule = cfg_dir / "schedule.yaml"
    schedule.write_text(schedule.read_text().replace("timezone: UTC", "timezone: Mars/Olympus"))
    problems = problems_of(cfg_dir)
    assert any("defaults.timezone: unknown timezone 'Mars/Olympus'" in p for p in problems)


def test_unknown_task_is_reported_with_line_and_suggestion(cfg_dir: Path) -> None:
    schedule = cfg_dir / "schedule.yaml"
    schedule.write_text(
        schedule.read_text().replace("task: demo.refresh_profile", "task: demo.refresh_profil")
    )
    problems = problems_of(cfg_dir, with_tasks=True)
    assert len(problems) == 1
    assert "entries.profile_refresh.fanout.task: unknown task 'demo.refresh_profil'" in problems[0]
    assert "did you mean 'demo.refresh_profile'" in problems[0]


def test_unknown_app_module(cfg_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(Settings(config_dir=cfg_dir, app_modules=("no_such_module_xyz",)))
    assert "app module 'no_such_module_xyz' cannot be imported" in info.value.problems[0]
    # A newcomer's `myapp.py` beside config/: the installed `jobsys` script does not
    # look in the current folder, and the message says how to make it importable.
    assert "set PYTHONPATH (PYTHONPATH=. jobsys ...)" in info.value.problems[0]


def test_app_module_missing_a_dependency_gets_no_path_hint(
    cfg_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "newcomer_app_xyz.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError) as info:
        load_config(Settings(config_dir=cfg_dir, app_modules=("newcomer_app_xyz",)))
    problem = info.value.problems[0]
    assert "No module named 'no_such_dependency_xyz'" in problem
    assert "PYTHONPATH" not in problem


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("base:\n  concurrency: 1\nbase:\n  concurrency: 2\n", "base: duplicate key"),
        ("- just\n- a list\n", "the top level must be a mapping"),
        ("base: [unclosed\n", "invalid YAML"),
        ("base: !!python/object:os.system {}\n", "invalid value"),
    ],
)
def test_yaml_defects(cfg_dir: Path, content: str, message: str) -> None:
    (cfg_dir / "queues.yaml").write_text(content)
    problems = problems_of(cfg_dir)
    assert any(message in p for p in problems), problems
    assert all("queues.yaml:" in p for p in problems if "queues" in p)


def test_alias_bomb_is_an_error_not_a_hang(cfg_dir: Path) -> None:
    bomb = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb.append(f"{cur}: &{cur} [" + ", ".join(f"*{prev}" for _ in range(10)) + "]")
    (cfg_dir / "queues.yaml").write_text("\n".join(bomb) + "\n")
    problems = problems_of(cfg_dir)
    assert any("too many nodes" in p for p in problems), problems


def test_oversized_file(cfg_dir: Path) -> None:
    (cfg_dir / "queues.yaml").write_text("# " + "x" * (1024 * 1024 + 10) + "\n")
    problems = problems_of(cfg_dir)
    assert any("the limit is" in p for p in problems)


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path / "nope")
    assert "configuration directory not found" in info.value.problems[0]


def test_missing_file(cfg_dir: Path) -> None:
    (cfg_dir / "schedule.yaml").unlink()
    problems = problems_of(cfg_dir)
    assert problems == ["" + problems[0]]
    assert "schedule.yaml:1: file not found" in problems[0]


def test_one_bad_entry_does_not_hide_the_others(cfg_dir: Path) -> None:
    """An unknown key in one entry, a bad cron, timezone and queue in others, an
    unknown task in another: all reported by one run, with their lines."""
    schedule = cfg_dir / "schedule.yaml"
    text = schedule.read_text()
    text = text.replace("  story_auto_replies:\n", "  story_auto_replies:\n    descripton: typo\n")
    text = text.replace('cron: "20 * * * *"', 'cron: "61 * * * *"')
    text = text.replace("      queue: avatars", "      queue: avatarz")
    text = text.replace("task: demo.refresh_profile", "task: demo.refresh_profil")
    text = text.replace("timezone: UTC", "timezone: Mars/Olympus")
    schedule.write_text(text)
    (cfg_dir / "queues.yaml").write_text(
        (cfg_dir / "queues.yaml")
        .read_text()
        .replace("  ai_ocr_queue:\n", "  ai_ocr_queue:\n    concurency: 3\n")
    )
    problems = problems_of(cfg_dir, with_tasks=True)
    joined = "\n".join(problems)
    for expected in (
        "entries.story_auto_replies.descripton: unknown key (did you mean 'description'?)",
        "entries.recent_profile_post_scans.cron: invalid cron expression '61 * * * *'",
        "entries.avatar_sync.fanout.queue: unknown queue 'avatarz'",
        "defaults.timezone: unknown timezone 'Mars/Olympus'",
        "capsules.ai_ocr_queue.concurency: unknown key",
    ):
        assert expected in joined, joined
    assert "entries.profile_refresh.fanout.task: unknown task 'demo.refresh_profil'" in joined
    assert len(problems) == 6, joined


@pytest.mark.parametrize(
    "text",
    ["", "# truncated\n", "defaults:\n  timezone: UTC\n", "entries: {}\n", "entries:\n"],
)
def test_an_entry_less_schedule_is_refused_naming_the_file(cfg_dir: Path, text: str) -> None:
    (cfg_dir / "schedule.yaml").write_text(text)
    problems = problems_of(cfg_dir)
    assert len(problems) == 1, problems
    assert "schedule.yaml:" in problems[0]
    assert "the schedule has no entries" in problems[0]
    assert "allow_empty: true" in problems[0]


def test_an_explicitly_empty_schedule_loads(cfg_dir: Path) -> None:
    (cfg_dir / "schedule.yaml").write_text("allow_empty: true\nentries: {}\n")
    assert load(cfg_dir).schedule.entries == {}
    (cfg_dir / "schedule.yaml").write_text("allow_empty: true\n")
    assert load(cfg_dir).schedule.allow_empty is True


def test_a_schedule_without_the_maintenance_entries_is_refused(cfg_dir: Path) -> None:
    schedule = cfg_dir / "schedule.yaml"
    text = schedule.read_text()
    # Drop the reaper and retention entries (what a careless edit would do).
    start = text.index("  reap_dead_workers:")
    end = text.index("  retry_failed_jobs:")
    schedule.write_text(text[:start] + text[end:])
    problems = problems_of(cfg_dir)
    assert len(problems) == 2, problems
    assert all(p.startswith("config/schedule.yaml:") or "schedule.yaml:" in p for p in problems)
    assert "'jobsys.reap'" in problems[0] and "recovers jobs of dead workers" in problems[0]
    assert "'jobsys.purge_retention'" in problems[1]
    assert "maintenance: optional" in problems[0]
    schedule.write_text("maintenance: optional\n" + text[:start] + text[end:])
    assert "reap_dead_workers" not in load(cfg_dir).schedule.entries


def test_service_health_is_required_only_with_services(cfg_dir: Path) -> None:
    schedule = cfg_dir / "schedule.yaml"
    text = schedule.read_text()
    without = text[: text.index("  check_ai_service_health:")]
    schedule.write_text(without)
    problems = problems_of(cfg_dir)
    assert len(problems) == 1 and "'jobsys.check_service_health'" in problems[0], problems
    queues = cfg_dir / "queues.yaml"
    services = "  services:\n    ai:\n"
    assert services in queues.read_text()
    queues.write_text(queues.read_text().replace(services, "  services: {}\n  _was_ai:\n"))
    queues.write_text(
        queues.read_text()
        .replace("  _was_ai:\n", "")
        .replace(
            "      url: http://127.0.0.1:8765/health\n      timeout_seconds: 2\n"
            "      expected_status: 200\n",
            "",
        )
    )
    assert load(cfg_dir).queues.health.services == {}


def test_a_disabled_maintenance_entry_counts_as_listed(cfg_dir: Path) -> None:
    schedule = cfg_dir / "schedule.yaml"
    text = schedule.read_text()
    schedule.write_text(
        text.replace("    task: jobsys.reap\n", "    task: jobsys.reap\n    enabled: false\n")
    )
    assert load(cfg_dir).schedule.entries["reap_dead_workers"].enabled is False


def test_unknown_top_level_schedule_key_does_not_hide_the_entries_problems(
    cfg_dir: Path,
) -> None:
    schedule = cfg_dir / "schedule.yaml"
    text = schedule.read_text()
    start = text.index('cron: "')
    first_cron = text[start : text.index("\n", start)]
    schedule.write_text(
        "entires: {}\n"
        + text.replace(first_cron, 'cron: "61 * * * *"', 1)
        + "  bad_zone:\n    cron: '0 * * * *'\n    timezone: Mars/Olympus\n    task: jobsys.reap\n"
    )
    problems = problems_of(cfg_dir, with_tasks=True)
    assert any("entires: unknown key (did you mean 'entries'?)" in p for p in problems), problems
    assert any("invalid cron expression '61 * * * *'" in p for p in problems), problems
    assert any("unknown timezone 'Mars/Olympus'" in p for p in problems), problems


def test_fanout_unique_options_reach_the_plan(cfg_dir: Path) -> None:
    from jobsys.jobs.unique import UniqueSpec
    from jobsys.schedule.plan import build

    schedule = cfg_dir / "schedule.yaml"
    text = schedule.read_text()
    marker = "      task: demo.process_account\n      queue: sync\n"
    assert marker in text
    schedule.write_text(
        text.replace(
            marker,
            marker + "      unique_for: 2h\n      unique_keys: [account_id]\n"
            "      unique_states: [waiting, running]\n",
            1,
        )
    )
    plan = build(load_config(Settings(config_dir=cfg_dir)))
    fanouts = {n: e.fanout for n, e in plan.entries.items() if e.fanout}
    chosen = [f.unique for f in fanouts.values() if f.unique]
    assert chosen == [UniqueSpec(7200.0, ("account_id",), ("waiting", "running"))]


@pytest.mark.parametrize(
    ("lines", "says"),
    [
        ("      unique_for: soon\n", "fanout.unique_for: unique_for 'soon' is not a duration"),
        ("      unique_keys: [account_id]\n", "unique_keys and unique_states need unique_for"),
        (
            "      unique_for: 1h\n      unique_states: [done]\n",
            "fanout.unique_states.0: input should be 'waiting'",
        ),
        # A unique key no item job has would be null in every key: one job for all items.
        (
            "      unique_for: 1h\n      unique_keys: [acount_id]\n",
            "schedule.yaml:22: entries.continuous_account_processing.fanout.unique_keys: "
            "unique key 'acount_id' is not one of the item jobs' arguments (account_id) "
            "(did you mean 'account_id'?)",
        ),
        (
            "      item_arg: id\n      args: {mode: full}\n"
            "      unique_for: 1h\n      unique_keys: [mode, account_id]\n",
            "fanout.unique_keys: unique key 'account_id' is not one of the item jobs' "
            "arguments (id, mode)",
        ),
    ],
)
def test_bad_fanout_unique_options_are_located_problems(
    cfg_dir: Path, lines: str, says: str
) -> None:
    schedule = cfg_dir / "schedule.yaml"
    marker = "      task: demo.process_account\n      queue: sync\n"
    schedule.write_text(schedule.read_text().replace(marker, marker + lines, 1))
    joined = "\n".join(problems_of(cfg_dir))
    assert says in joined, joined


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            "task: demo.process_account\n",
            "task: t.keyed\n",
            "config/schedule.yaml:19: entries.continuous_account_processing.fanout.task: "
            "task 't.keyed''s unique_keys: unique key 'acount_id' is not one of the item jobs' "
            "arguments (account_id) (did you mean 'account_id'?)",
        ),
        # Two plain entries (accounts 1 and 2) made one job: the key was null in both.
        (
            "entries:\n",
            "entries:\n  plain_a:\n    cron: '0 * * * *'\n    task: t.keyed\n"
            "    args: {account_id: 1}\n",
            "config/schedule.yaml:14: entries.plain_a.task: task 't.keyed''s unique_keys: "
            "unique key 'acount_id' is not one of the entry's arguments (account_id) "
            "(did you mean 'account_id'?)",
        ),
    ],
)
def test_an_entrys_task_with_a_unique_key_its_jobs_lack_is_refused(
    cfg_dir: Path, old: str, new: str, says: str
) -> None:
    from jobsys import tasks

    # (**kwargs: the decorator takes any key; a typo next to named parameters is
    # refused at import)
    @tasks.task(queue="sync", name="t.keyed", unique_for="1h", unique_keys=("acount_id",))
    def keyed(**args: object) -> None: ...

    schedule = cfg_dir / "schedule.yaml"
    schedule.write_text(schedule.read_text().replace(old, new, 1))
    try:
        problems = problems_of(cfg_dir, with_tasks=True)
    finally:
        tasks.unregister("t.keyed")
    (problem,) = problems
    assert problem.endswith(says), problem


def test_a_fanout_items_unique_key_with_a_default_may_be_left_out(cfg_dir: Path) -> None:
    # An item job leaves force out: its key takes force's default (jobsys.jobs.defer).
    from jobsys import tasks

    @tasks.task(queue="sync", name="t.opt", unique_for="1h", unique_keys=("account_id", "force"))
    def opt(account_id: int, force: bool = False) -> None: ...

    schedule = cfg_dir / "schedule.yaml"
    text = schedule.read_text()
    schedule.write_text(text.replace("task: demo.process_account\n", "task: t.opt\n", 1))
    try:
        config = load_config(Settings(config_dir=cfg_dir), with_tasks=True)
    finally:
        tasks.unregister("t.opt")
    assert config.schedule.entries["continuous_account_processing"].fanout is not None


def test_fanout_unique_states_are_the_jobs_states() -> None:
    from typing import get_args

    from jobsys.config.models import UniqueState
    from jobsys.jobs.unique import STATES

    assert set(get_args(UniqueState)) == set(STATES)


def test_a_priority_outside_postgresqls_integer_is_a_located_problem(cfg_dir: Path) -> None:
    # It used to load, then end every tick in the database's NumericValueOutOfRange.
    schedule = cfg_dir / "schedule.yaml"
    schedule.write_text(
        schedule.read_text().replace(
            'cron: "15 4 * * *"', 'cron: "15 4 * * *"\n    priority: 99999999999'
        )
    )
    (problem,) = problems_of(cfg_dir)
    assert "entries.purge_expired_post_media.priority:" in problem, problem
    assert "2147483647" in problem, problem


def test_a_task_declared_with_a_priority_outside_the_range_is_refused() -> None:
    from jobsys.errors import UsageError
    from jobsys.tasks import task

    with pytest.raises(UsageError, match="priority: 2147483648 is out of range"):

        @task(queue="sync", name="tests.out_of_range_priority", priority=2**31)
        def out_of_range() -> None: ...

    from jobsys.tasks import registry

    assert "tests.out_of_range_priority" not in registry()


@pytest.mark.parametrize("priority", ["5", None, 2.5, True])
def test_a_task_declared_with_a_priority_that_is_not_an_integer_is_refused(
    priority: object,
) -> None:
    from jobsys.errors import UsageError
    from jobsys.tasks import task

    with pytest.raises(UsageError, match="must be an integer"):

        @task(queue="sync", name="tests.bad_priority_type", priority=priority)  # type: ignore[arg-type]
        def bad() -> None: ...


@pytest.mark.parametrize(
    ("old", "new", "says"),
    [
        (
            "    task: demo.purge_expired_post_media\n",
            "    task: demo.purge_expired_post_media\n    args: {days: 3}\n",
            "entries.purge_expired_post_media.args: its jobs do not fit task "
            "demo.purge_expired_post_media: unknown argument 'days'",
        ),
        (
            "      task: demo.process_account\n",
            "      task: demo.process_account\n      item_arg: acount_id\n",
            "entries.continuous_account_processing.fanout.item_arg: its jobs do not fit task "
            "demo.process_account: unknown argument 'acount_id' (did you mean 'account_id'?); "
            "missing 'account_id'",
        ),
        (
            "      task: demo.process_account\n",
            "      task: demo.process_account\n      args: {accont: 1}\n",
            "entries.continuous_account_processing.fanout.args: its jobs do not fit task "
            "demo.process_account: unknown argument 'accont'",
        ),
    ],
)
def test_config_check_refuses_an_entrys_args_that_do_not_fit_its_task(
    cfg_dir: Path, cli: Any, old: str, new: str, says: str
) -> None:
    # The deploy walk: `args: {days: 3}` for a task without arguments passed `config
    # check` (exit 0) and every tick's job would have failed with a TypeError, while
    # `jobsys defer` refuses the same arguments.
    from jobsys.config.application import schedule_args_problems

    schedule = cfg_dir / "schedule.yaml"
    schedule.write_text(schedule.read_text().replace(old, new, 1))
    (problem,) = schedule_args_problems(load_config(Settings(config_dir=cfg_dir)))
    assert problem.endswith(says), problem
    line = schedule.read_text().splitlines().index(new.splitlines()[-1]) + 1
    assert f"schedule.yaml:{line}: " in problem
    result = cli("--config-dir", str(cfg_dir), "config", "check")
    assert result.exit_code == 2, result.stdout + result.stderr
    assert says in " ".join(result.stdout.split())
    assert "1 problem(s) found" in result.stderr and "Traceback" not in result.stderr


def test_the_shipped_schedule_args_fit_their_tasks() -> None:
    from jobsys.config.application import schedule_args_problems

    assert schedule_args_problems(load_config(Settings(config_dir=REPO / "config"))) == []
