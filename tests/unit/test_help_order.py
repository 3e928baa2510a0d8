"""``jobsys --help`` lists the commands in the order of README's command reference,
under headings (newuser L14: it listed them in no clear order)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from jobsys.cli.main import HEADINGS

README = (Path(__file__).parents[2] / "README.md").read_text()


def reference_order() -> list[str]:
    table = README[README.index("## Command reference\n") :]
    table = table[: table.index("\n## ", 1)]
    names = re.findall(r"^\| `jobsys ([a-z][a-z-]*)", table, flags=re.MULTILINE)
    return list(dict.fromkeys(names))


def test_help_lists_commands_in_the_readme_order_under_headings(  # type: ignore[no-untyped-def]
    cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    # jobsys's help is plain (jobsys.cli sets TYPER_USE_RICH=0), but Typer reads that
    # once, when first imported: another test may have imported it first. (With
    # TYPER_USE_RICH=1 Typer draws the same headings as boxes, from rich_help_panel.)
    monkeypatch.setattr("typer.core.HAS_RICH", False)
    result = cli("--help")
    assert result.exit_code == 0
    listed = re.findall(r"^  ([a-z][a-z-]*)  ", result.stdout, flags=re.MULTILINE)
    headings = re.findall(r"^(\S[^:\n]*):$", result.stdout, flags=re.MULTILINE)
    assert listed == reference_order()
    assert headings == ["Options", *HEADINGS]
