"""Walks over jobsys's own source for the guard tests that read it (configuration at
the edge, the engine door): each names what it finds as ``jobsys/<path>:<where>``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

#: The package as checked out.
PACKAGE = Path(__file__).resolve().parents[1] / "jobsys"


def found_outside(
    package: Path, allowed: tuple[str, ...], finder: Callable[[str], Iterable[object]]
) -> list[str]:
    """What ``finder`` reports in each module of ``package`` (given its source) whose
    path under the package does not start with one of ``allowed``."""
    found = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package).as_posix()
        if relative.startswith(allowed):
            continue
        found += [f"jobsys/{relative}:{hit}" for hit in finder(path.read_text("utf-8"))]
    return found
