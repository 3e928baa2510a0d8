"""A real PgBouncer (Debian's ``pgbouncer``) in front of the test database, started
from ``examples/pgbouncer.ini`` with only its port, database line, auth and pool mode
changed. Ports come from 16200-16299 (this suite's range on the shared machine)."""

from __future__ import annotations

import configparser
import contextlib
import os
import pwd
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from psycopg.conninfo import conninfo_to_dict

REPO = Path(__file__).resolve().parents[2]
EXAMPLE_INI = REPO / "examples" / "pgbouncer.ini"
PORTS = range(16200, 16300)


def _free_port() -> int:
    for port in PORTS:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.skip("no free port in 16200-16299 for PgBouncer")


def _wait_port(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"pgbouncer exited {proc.returncode}: {log.read_text()}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"pgbouncer did not listen on {port}: {log.read_text()}")


@contextlib.contextmanager
def pgbouncer(
    db_url: str, tmp: Path, *, pool_mode: str, pool_size: int | None = None
) -> Iterator[str]:
    """Start PgBouncer in ``pool_mode`` for ``db_url``'s database; yield its URL.
    ``pool_size``: its ``default_pool_size`` (server connections), else the example's."""
    binary = shutil.which("pgbouncer") or (
        "/usr/sbin/pgbouncer" if Path("/usr/sbin/pgbouncer").exists() else None
    )
    if binary is None:
        pytest.skip("pgbouncer is not installed (Debian: apt-get install pgbouncer; .ci/run does)")
    info = conninfo_to_dict(db_url)
    host, port, dbname = info.get("host", "127.0.0.1"), info.get("port", "5432"), info["dbname"]
    user = info.get("user", "postgres")
    run_as = None
    if os.geteuid() == 0:  # PgBouncer refuses to run as root: -u drops privileges
        run_as = "postgres" if _user_exists("postgres") else "nobody"
        if str(host).startswith("/") and not _open_to_others(Path(host)):
            pytest.skip(
                f"the server's socket directory {host} is private to root, and PgBouncer "
                "cannot run as root (the machine server's run covers this test)"
            )
    folder = tmp / f"pgbouncer-{pool_mode}"
    folder.mkdir()
    ini = configparser.ConfigParser(interpolation=None)
    ini.optionxform = str  # type: ignore[assignment,method-assign]
    ini.read(EXAMPLE_INI)
    listen_port = _free_port()
    ini["databases"] = {dbname: f"host={host} port={port} dbname={dbname}"}
    ini["pgbouncer"]["listen_port"] = str(listen_port)
    ini["pgbouncer"]["pool_mode"] = pool_mode
    if pool_size is not None:
        ini["pgbouncer"]["default_pool_size"] = str(pool_size)
    ini["pgbouncer"]["auth_type"] = "trust"  # the test server trusts loopback
    ini["pgbouncer"]["auth_file"] = str(folder / "userlist.txt")
    ini["pgbouncer"]["unix_socket_dir"] = ""
    (folder / "userlist.txt").write_text(f'"{user}" ""\n')
    with (folder / "pgbouncer.ini").open("w") as f:
        ini.write(f)
    folder.chmod(0o755)
    for path in folder.iterdir():
        path.chmod(0o644)
    log = folder / "pgbouncer.log"
    args = [binary, *(["-u", run_as] if run_as else []), str(folder / "pgbouncer.ini")]
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_port(listen_port, proc, log)
        yield f"postgresql://{user}@127.0.0.1:{listen_port}/{dbname}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _open_to_others(path: Path) -> bool:
    """Whether a user other than the owner can reach ``path`` (x on every folder)."""
    return all(p.stat().st_mode & 0o001 for p in [path, *path.parents])


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
