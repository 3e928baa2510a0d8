"""``_output.problems_found``: what a failed check prints. The hint to run ``jobsys
config check`` is left out because the exception says so (``ConfigError.runs_check``),
never because of what its text says."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobsys.cli._output import problems_found
from jobsys.errors import ConfigError


def test_a_hint_to_run_config_check_is_left_out(capsys: pytest.CaptureFixture[str]) -> None:
    exc = ConfigError(
        ["queues.yaml: base.concurrency: must be >= 1"],
        hint="Fix the lines above, then run `jobsys config check`.",
        runs_check=True,
    )
    problems_found(exc, json=False)
    out, err = capsys.readouterr()
    assert out == "queues.yaml: base.concurrency: must be >= 1\n"
    assert err == "1 problem(s) found\n"


def test_any_other_hint_is_shown_whatever_its_words(capsys: pytest.CaptureFixture[str]) -> None:
    """The old code hid every hint whose text held "config check"."""
    exc = ConfigError(["a problem"], hint="Compare with `jobsys config check --json`.")
    problems_found(exc, json=False)
    assert capsys.readouterr().err == (
        "1 problem(s) found\nCompare with `jobsys config check --json`.\n"
    )


def test_json_is_the_problems_only(capsys: pytest.CaptureFixture[str]) -> None:
    problems_found(ConfigError(["a", "b"], hint="Fix it.", runs_check=True), json=True)
    out, err = capsys.readouterr()
    assert out.strip() == '{"ok": false, "problems": ["a", "b"]}' and err == ""


def test_a_config_error_rebuilt_with_import_problems_keeps_runs_check(
    tmp_path: Path,
) -> None:
    """``load_config`` adds the application's import problems to the files' error: the
    hint (run config check) and the flag travel together."""
    from jobsys.config.application import load_config
    from jobsys.settings import Settings

    directory = tmp_path
    (directory / "queues.yaml").write_text("base:\n  concurrency: 0\n  queues: [a]\n")
    (directory / "schedule.yaml").write_text("entries: {}\nallow_empty: true\n")
    settings = Settings(config_dir=directory, app_modules=("no_such_module_xyz",))
    with pytest.raises(ConfigError) as raised:
        load_config(settings)
    assert raised.value.runs_check and "config check" in (raised.value.hint or "")
    assert any("no_such_module_xyz" in p for p in raised.value.problems)
