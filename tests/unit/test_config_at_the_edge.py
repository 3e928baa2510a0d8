"""Configuration is loaded once at the edge and passed down (issue #11): only the edges
(the CLI, the web console, the worker's assembly ``app.py``, the public API in
``jobsys/__init__.py``) and the configuration room itself call ``load_config`` (or
import the files' reader ``jobsys.config.load``); every
domain service takes the loaded configuration (or a loader the edge hands it) as a
parameter. The walk reads the source (AST), so a call hidden behind a local import or
an alias of the module is found too."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.source_walk import PACKAGE, found_outside

#: Where loading the configuration belongs (paths under ``jobsys/``).
EDGES = ("cli/", "web/", "app.py", "__init__.py", "config/")
#: The functions that read the configuration files for a caller.
LOADERS = {"load_config", "load_config_tasks_if_they_load"}
#: The files' reader itself (``jobsys.config.load``): found by its import, the name
#: ``load`` being too common to find by its calls.
FILE_READERS = {"jobsys.config", "jobsys.config.loader"}


def loader_uses(source: str) -> list[int]:
    """Lines of ``source`` that call a loader or import one."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call):
            func = node.func
            name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", None)
            if name in LOADERS:
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom) and any(
            a.name in LOADERS or (a.name == "load" and node.module in FILE_READERS)
            for a in node.names
        ):
            lines.append(node.lineno)
    return sorted(set(lines))


def outside_the_edge(package: Path) -> list[str]:
    return found_outside(package, EDGES, loader_uses)


def test_no_domain_loads_the_configuration_itself() -> None:
    assert outside_the_edge(PACKAGE) == []


def test_the_edges_do_load_it() -> None:
    """The walk sees the real calls: the edges' own loads are found where they are."""
    assert loader_uses((PACKAGE / "cli" / "_context.py").read_text("utf-8"))
    assert loader_uses((PACKAGE / "web" / "app.py").read_text("utf-8"))
    assert loader_uses((PACKAGE / "app.py").read_text("utf-8"))


def test_a_domain_service_loading_it_is_refused(tmp_path: Path) -> None:
    """The shape every domain service had before (a local import, then the call) is
    found in a domain module, under either loader, and through a module alias."""
    service = tmp_path / "jobs" / "service.py"
    service.parent.mkdir()
    service.write_text(
        "async def list_jobs(settings):\n"
        "    from jobsys.config.application import load_config\n"
        "\n"
        "    config = load_config(settings)\n"
        "    return config\n"
        "\n"
        "def overview(settings):\n"
        "    import jobsys.config.application as application\n"
        "\n"
        "    return application.load_config_tasks_if_they_load(settings)\n"
        "\n"
        "def runs(settings):\n"
        "    from jobsys.config import Config, load\n"
        "\n"
        "    return load(settings.config_dir)\n",
        encoding="utf-8",
    )
    edge = tmp_path / "cli" / "jobs.py"
    edge.parent.mkdir()
    edge.write_text(
        "from jobsys.config.application import load_config\nload_config(None)\n", "utf-8"
    )
    assert outside_the_edge(tmp_path) == [
        "jobsys/jobs/service.py:2",
        "jobsys/jobs/service.py:4",
        "jobsys/jobs/service.py:10",
        "jobsys/jobs/service.py:13",
    ]
