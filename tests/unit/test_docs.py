"""The README is the operator's manual: it must document every command and make target.

The idea comes from sqlite-utils, whose tests fail when a command is missing from its
docs. No database: the CLI is walked as a Typer app, the Makefile and README as text.

- every leaf command of ``jobsys`` (and every group that runs on its own) has a row in
  README's "Command reference" table, and every row there names a real command with
  only options that command has;
- every ``make`` target with a ``## `` help comment appears in README as ``make <target>``;
- README opens with one fenced block holding ``make run`` and ``make test``;
- the table of contents lists the ``## `` sections, in order, with working anchors;
- every migration under ``migrations/versions/`` has a row in README's migration table.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.main import get_command, get_command_name

from jobsys.cli.main import app

REPO = Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text(encoding="utf-8")
MAKEFILE = (REPO / "Makefile").read_text(encoding="utf-8")

REFERENCE_HEADING = "## Command reference"
# The same pattern as the Makefile's own `help` target.
MAKE_TARGET_RE = re.compile(r"^([a-zA-Z_-]+):.*## ", re.MULTILINE)
FENCED_BLOCK_RE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
OPTION_RE = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def leaf_paths(typer_app: typer.Typer, prefix: tuple[str, ...] = ()) -> Iterator[str]:
    """Every leaf command path ("db start", "top"), resolved the way Typer names them:
    the explicit name, else the callback's name lower-cased with ``_`` turned into ``-``."""
    for command in typer_app.registered_commands:
        if command.hidden:
            continue
        assert command.callback is not None
        name = command.name or get_command_name(command.callback.__name__)
        yield " ".join((*prefix, name))
    for group in typer_app.registered_groups:
        assert group.typer_instance is not None
        group_name = group.name or group.typer_instance.info.name
        assert isinstance(group_name, str), f"a command group under {prefix} has no name"
        if group.typer_instance.info.invoke_without_command:
            yield " ".join((*prefix, group_name))  # a group that also runs on its own
        yield from leaf_paths(group.typer_instance, (*prefix, group_name))


COMMANDS = sorted(leaf_paths(app))


def click_command(path: str) -> Any:
    """The built (click) command for ``path``, to read its options."""
    command: Any = get_command(app)
    for word in path.split():
        command = command.commands[word]
    return command


def section(heading: str) -> str:
    start = README.index(heading + "\n")
    end = README.find("\n## ", start + len(heading))
    return README[start : end if end != -1 else len(README)]


def split_row(line: str) -> list[str]:
    """Cells of a Markdown table row; ``\\|`` inside a cell is not a separator."""
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [cell.strip().replace("\\|", "|") for cell in cells]


def reference_rows() -> dict[str, list[str]]:
    """Command path -> the row's cells, from the "Command reference" table. The path is
    the lower-case words after ``jobsys`` in the first cell, up to the arguments."""
    rows: dict[str, list[str]] = {}
    for line in section(REFERENCE_HEADING).splitlines():
        if not line.startswith("| `jobsys "):
            continue
        cells = split_row(line)
        words = cells[0].strip("`").split()[1:]
        path_words = []
        for word in words:
            if not re.fullmatch(r"[a-z][a-z-]*", word):
                break
            path_words.append(word)
        path = " ".join(path_words)
        assert path not in rows, f"two rows document `jobsys {path}`"
        rows[path] = cells
    return rows


def test_the_cli_walk_matches_the_built_cli() -> None:
    """The name resolution above agrees with what Typer actually builds."""

    def built(command: Any, prefix: tuple[str, ...] = ()) -> Iterator[str]:
        for name, sub in command.commands.items():
            if hasattr(sub, "commands"):
                if sub.invoke_without_command:
                    yield " ".join((*prefix, name))
                yield from built(sub, (*prefix, name))
            elif not sub.hidden:
                yield " ".join((*prefix, name))

    assert sorted(built(get_command(app))) == COMMANDS
    assert {"failures list", "issues retry", "jobs retry", "top", "retry"} <= set(COMMANDS)
    assert {"queues", "queues pause"} <= set(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS)
def test_every_command_has_a_row_in_the_command_reference(path: str) -> None:
    assert path in reference_rows(), (
        f"`jobsys {path}` has no row in README's {REFERENCE_HEADING!r} table"
    )
    assert re.search(re.escape(f"jobsys {path}") + r"(?![\w-])", README)


@pytest.mark.parametrize("path", COMMANDS)
def test_every_argument_reads_as_the_readme_writes_it(path: str) -> None:
    """Usage lines said `{name}`, `{job_id}`, `[failure_ids]...` beside `{ID}`, `{RUN}`
    and the README's NAME, ID: an argument's metavar is upper case."""
    from typer.core import TyperArgument

    command = click_command(path)
    for param in command.params:
        if isinstance(param, TyperArgument):
            assert param.metavar and param.metavar == param.metavar.upper(), (
                f"`jobsys {path}`: argument {param.name!r} reads {param.metavar!r}"
            )


def test_every_row_names_a_real_command_with_real_options() -> None:
    problems = []
    for path, cells in reference_rows().items():
        if path not in COMMANDS:
            problems.append(f"`jobsys {path}`: no such command")
            continue
        known = {
            opt
            for param in click_command(path).params
            for opt in (*getattr(param, "opts", ()), *getattr(param, "secondary_opts", ()))
        }
        for cell in cells[:2]:  # the command and its options; the purpose is free text
            for option in OPTION_RE.findall(cell):
                if option not in known:
                    problems.append(f"`jobsys {path}`: no option {option}")
    assert not problems, "\n".join(problems)


def make_targets() -> list[str]:
    return MAKE_TARGET_RE.findall(MAKEFILE)


def test_the_makefile_has_documented_targets() -> None:
    assert {"help", "run", "test", "bench"} <= set(make_targets())


def test_make_help_fits_80_columns() -> None:
    """`make help` as an 80-column terminal shows it: one line per target, none wrapped."""
    import shutil
    import subprocess

    make = shutil.which("make")
    if make is None:
        pytest.skip("make is not installed")
    shown = subprocess.run(
        [make, "--no-print-directory", "help"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert len(shown) == len(make_targets())  # one line per documented target
    assert [line for line in shown if len(line) > 80] == []


def test_every_editable_install_silences_setuptools_box() -> None:
    """setuptools prints a boxed BuildBackendWarning (a UserWarning) on every editable
    install; `make run`, `make test` and `make bench` install that way, so each recipe
    line that does sets the warnings filter (the bench's stamp once did not)."""
    installs = [
        line.strip()
        for line in MAKEFILE.splitlines()
        if "pip install" in line and " -e " in line and not line.lstrip().startswith("@#")
    ]
    assert len(installs) >= 2  # the dev install and the bench install
    assert [line for line in installs if "PYTHONWARNINGS=ignore::UserWarning" not in line] == []


@pytest.mark.parametrize("target", make_targets())
def test_every_make_target_is_in_the_readme(target: str) -> None:
    assert re.search(r"`make " + re.escape(target) + r"(?![\w-])", README), (
        f"`make {target}` is not documented in README.md"
    )


def test_the_readme_opens_with_make_run_and_make_test() -> None:
    first = FENCED_BLOCK_RE.search(README)
    assert first is not None, "README.md has no fenced code block"
    before = README[: first.start()]
    assert [line for line in before.splitlines() if line.strip()] == ["# jobsys"]
    lines = [line for line in first.group(1).splitlines() if line.strip()]
    assert [line.split()[:2] for line in lines] == [["make", "run"], ["make", "test"]]


def anchor(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to ``-``."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def test_the_contents_match_the_sections() -> None:
    headings = re.findall(r"^## (.+)$", README, re.MULTILINE)
    assert headings[0] == "Contents"
    listed = re.findall(r"^- \[(.+?)\]\(#(.+?)\)$", section("## Contents"), re.MULTILINE)
    assert [title for title, _ in listed] == headings[1:]
    assert all(target == anchor(title) for title, target in listed)
    anchors = {anchor(h) for h in re.findall(r"^#{2,3} (.+)$", README, re.MULTILINE)}
    broken = sorted(set(re.findall(r"\]\(#([\w-]+)\)", README)) - anchors)
    assert not broken, f"links to missing sections: {broken}"


MIGRATIONS = REPO / "migrations" / "versions"


@pytest.mark.parametrize("revision", sorted(p.stem for p in MIGRATIONS.glob("[0-9]*.py")))
def test_every_migration_has_a_row_in_the_readme(revision: str) -> None:
    # An operator reading `db upgrade`'s output or `db current` looks the revision up here.
    assert f"| `{revision}` |" in README, (
        f"migration {revision} has no row in README's migration table"
    )
