"""The service behind ``jobsys systemd render``: load the lanes, render the units
(:mod:`jobsys.lanes.systemd`), and print or write them."""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import sys
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from jobsys.errors import JobsysError, UsageError
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


#: Errors of the disk itself (full, over quota, failing): the render failed (exit 1).
#: Any other error means the folder given cannot take the files (a usage error, exit 2).
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EFBIG})


def write_units(out: Path, rows: list[dict[str, Any]]) -> None:
    """Write each row's ``content`` to ``out``/its ``name``, all or nothing: every file
    goes to a temporary name in ``out`` first, and only when all are written are they
    renamed into place; on a failure the temporaries (and the folders made for them)
    are removed, the files there left as they were. Sets each row's ``path`` and
    ``changed`` (False: the file already held it; it is not rewritten)."""
    made = [p for p in (out, *out.parents) if not p.exists()]  # deepest first
    staged: list[tuple[Path, Path]] = []
    replaced: list[str] = []
    try:
        out.mkdir(parents=True, exist_ok=True)
        for row in rows:
            path = out / row["name"]
            if path.is_dir():
                raise UsageError(
                    f"--out {out}: cannot write the unit files there: {path.name} is a folder",
                    hint="Nothing was written. Move it away, or give another folder.",
                )
            row["path"] = str(path.absolute())
            row["changed"] = not (path.is_file() and path.read_text() == row["content"])
            if row["changed"]:
                staged.append((path.with_name(f".{path.name}.tmp"), path))
                staged[-1][0].write_text(row["content"])
        for tmp, path in staged:
            os.replace(tmp, path)  # within one folder: all but never fails
            replaced.append(path.name)
    except (OSError, UsageError) as exc:
        _remove(tmp for tmp, _ in staged)
        _remove(made, folders=True)
        if isinstance(exc, UsageError):
            raise
        reason = exc.strerror or str(exc)
        if replaced:
            raise JobsysError(
                f"--out {out}: could not put every unit file in place: {reason}; "
                f"replaced only {', '.join(replaced)}",
                hint="Render again once the folder is in order.",
            ) from exc
        if exc.errno in DISK_ERRNOS:
            raise JobsysError(
                f"--out {out}: could not write the unit files: {reason}; nothing was changed",
                hint="Free some space (or mend the disk) and render again.",
            ) from exc
        raise UsageError(  # under a file, in /proc, read-only, not allowed...
            f"--out {out}: cannot write the unit files there: {reason}",
            hint="Nothing was written. Give a folder you may write to (it is created if missing).",
        ) from exc


def _remove(paths: Iterable[Path], *, folders: bool = False) -> None:
    """Remove what a failed write left (best effort: the error being raised says more)."""
    for path in paths:
        with contextlib.suppress(OSError):
            if folders:
                path.rmdir()
            else:
                path.unlink(missing_ok=True)


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
    embedded = f"{working_directory or Path.cwd()}/.jobsys"
    if not settings.database_url and not config.queues.database.url:
        warnings.append(
            "no database configured here: the units will start an embedded PostgreSQL "
            f"under {embedded} unless {environment_file} "
            "sets JOBSYS_DATABASE_URL (workers on several hosts need one shared server)."
        )
    elif settings.database_url and not config.queues.database.url:
        # The URL given to this render (flag or environment) may hold a password: it is
        # not written into the units, which anyone on the host can read. Without this
        # warning the workers silently ran on an embedded server of their own.
        given = (
            "--database-url" if settings.database_url_source == "flag" else "JOBSYS_DATABASE_URL"
        )
        warnings.append(
            f"the units do not carry the database URL given here ({given}): a unit file "
            f"is readable by anyone on the host. Set JOBSYS_DATABASE_URL in "
            f"{environment_file} (mode 600, see the install steps), or the units start "
            f"an embedded PostgreSQL under {embedded}."
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
        write_units(out, rows)
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
        "environment_file": environment_file,
        "warnings": warnings,
    }
