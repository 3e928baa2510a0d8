"""The service behind ``jobsys systemd render``: load the lanes, render the units
(:mod:`jobsys.lanes.systemd`), and print or write them."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from jobsys.errors import UsageError
from jobsys.lanes import systemd

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings


def default_exec_path() -> str:
    """The ``jobsys`` executable of this installation, as an absolute path."""
    beside = Path(sys.executable).parent / "jobsys"  # the venv's bin/, symlinks kept
    if beside.is_file():
        return str(beside.absolute())
    found = shutil.which("jobsys")
    if found:
        return str(Path(found).absolute())
    raise UsageError(
        "cannot find the jobsys executable to put in ExecStart.",
        hint="Pass --exec /path/to/jobsys.",
    )


def _write(path: Path, content: str) -> bool:
    """Write ``content`` atomically; False when the file already held it."""
    if path.is_file() and path.read_text() == content:
        return False
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(content)
    os.replace(tmp, path)
    return True


def render_units(
    settings: Settings,
    config: Config,
    *,
    out: Path | None = None,
    per_lane: bool = False,
    exec_path: str | None = None,
    working_directory: str | None = None,
    environment_file: str = systemd.DEFAULT_ENVIRONMENT_FILE,
    user: str | None = None,
    group: str | None = None,
) -> dict[str, Any]:
    """Render the units of every configured lane; write them under ``out`` if given."""
    warnings: list[str] = []
    config_dir = str(config.directory)
    if working_directory is not None:
        # The units run on the target host: its paths follow --working-directory and the
        # Makefile's layout (config/, .venv/), not wherever this render ran.
        target = PurePosixPath(working_directory)
        if settings.config_dir_source == "default":
            config_dir = str(target / "config")
        if exec_path is None:
            exec_path = str(target / ".venv" / "bin" / "jobsys")
            warnings.append(
                f"ExecStart runs {exec_path} (the virtualenv of `make install` under "
                "--working-directory); pass --exec PATH if jobsys is installed elsewhere."
            )
    if not settings.database_url and not config.queues.database.url:
        warnings.append(
            "no database configured here: the units will start an embedded PostgreSQL "
            f"under {working_directory or Path.cwd()}/.jobsys unless {environment_file} "
            "sets JOBSYS_DATABASE_URL (workers on several hosts need one shared server)."
        )
    options = systemd.RenderOptions(
        exec_path=exec_path or default_exec_path(),
        working_directory=working_directory or str(Path.cwd()),
        config_dir=config_dir,
        environment_file=environment_file,
        user=user,
        group=group,
    )
    units = systemd.render(config, options, per_lane=per_lane)
    rows: list[dict[str, Any]] = [
        {"name": u.name, "lane": u.lane, "path": None, "changed": None, "content": u.content}
        for u in units
    ]
    leftovers: list[str] = []
    if out is not None:
        if out.exists() and not out.is_dir():
            raise UsageError(f"--out {out} exists and is not a directory.")
        try:
            out.mkdir(parents=True, exist_ok=True)
            for row in rows:
                path = out / row["name"]
                row["changed"] = _write(path, row["content"])
                row["path"] = str(path.absolute())
        except OSError as exc:  # under a file, in /proc, read-only, not allowed...
            raise UsageError(
                f"--out {out}: cannot write the unit files there: {exc.strerror or exc}",
                hint="Give a folder you may write to (it is created if missing).",
            ) from exc
        written = {row["name"] for row in rows}
        leftovers = sorted(
            p.name
            for p in out.glob("jobsys-worker*.service")
            if p.name not in written  # from an earlier render in the other mode
        )
    enable = [u.name for u in units if u.lane is not None] or [
        systemd.worker_unit_name(lane, per_lane=False) for lane in config.lanes
    ]
    return {
        "per_lane": per_lane,
        "out": str(out.absolute()) if out is not None else None,
        "lanes": list(config.lanes),
        "timings": systemd.timings(config),
        "units": rows,
        "leftovers": leftovers,
        "enable": enable,
        "warnings": warnings,
    }
