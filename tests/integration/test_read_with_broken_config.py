"""A read command that does not need the configuration runs on a broken one, but says
so once on stderr (newuser L14): stdout and the exit code are those of a good one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import CONFIG_DIR


@pytest.mark.parametrize(
    "args",
    [
        ["issues", "list"],
        ["issues", "list", "--json"],
        ["failures", "list"],
        ["failures", "list", "--json"],
        ["failures", "list", "--group-by", "kind", "--json"],
    ],
)
def test_one_warning_naming_the_line(  # type: ignore[no-untyped-def]
    cli, db_url: str, tmp_path: Path, args: list[str]
) -> None:
    broken = tmp_path / "config"
    shutil.copytree(CONFIG_DIR, broken)
    queues = broken / "queues.yaml"
    queues.write_text(queues.read_text().replace("concurrency: 10", "concurrency: -1", 1))
    good = cli("--database-url", db_url, *args)
    result = cli("--database-url", db_url, "--config-dir", str(broken), *args)
    assert (result.exit_code, result.stdout) == (good.exit_code, good.stdout) == (0, good.stdout)
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr
    assert (
        "queues.yaml:13: base.concurrency: input should be greater than or equal to 1"
        in (warnings[0])
    )
    assert "run `jobsys config check`" in warnings[0]
    assert "warning" not in good.stderr
