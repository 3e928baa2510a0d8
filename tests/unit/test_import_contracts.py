"""The import contracts in ``pyproject.toml`` (``[tool.importlinter]``) hold, and they
can fail: a copy of the package with one deliberate back-edge (the engine importing
the assembly above it) is refused, naming the import. ``make lint`` runs the same
``lint-imports`` over the real tree."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def copy_package(tmp_path: Path) -> Path:
    shutil.copytree(REPO / "jobsys", tmp_path / "jobsys", ignore=shutil.ignore_patterns("*.pyc"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def with_import(tmp_path: Path, module: str, line: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over a copy of the package whose ``module`` (a path under
    ``jobsys/``) ends with ``line``; the result must be a failure."""
    root = copy_package(tmp_path)
    path = root / "jobsys" / module
    path.write_text(path.read_text(encoding="utf-8") + f"\n{line}\n", encoding="utf-8")
    result = lint_imports(root)
    assert result.returncode != 0
    return result


def test_the_contracts_hold(tmp_path: Path) -> None:
    result = lint_imports(copy_package(tmp_path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "broken" not in result.stdout.lower().replace("0 broken", "")


def test_a_back_edge_breaks_the_layers(tmp_path: Path) -> None:
    result = with_import(tmp_path, "engine/channels.py", "from jobsys.app import worker_services")
    assert "jobsys.engine is not allowed to import jobsys.app" in result.stdout
    assert "jobsys.engine.channels -> jobsys.app" in result.stdout


def test_procrastinate_outside_the_engine_breaks_the_door(tmp_path: Path) -> None:
    result = with_import(tmp_path, "schedule/store.py", "import procrastinate")
    assert "jobsys.schedule.store -> procrastinate" in result.stdout


def test_a_cycle_between_domains_breaks_the_acyclic_contract(tmp_path: Path) -> None:
    """The domains may use each other (one layer), but not in a circle: the jobs domain
    importing the scheduler, which defers through the jobs domain, is refused."""
    result = with_import(tmp_path, "jobs/unique.py", "import jobsys.schedule.plan")
    assert "No import cycles between jobsys's rooms BROKEN" in result.stdout
    assert "Layers: cli -> web, demo -> app -> domains -> engine, db, config KEPT" in result.stdout
