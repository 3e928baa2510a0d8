"""Test infrastructure: a real PostgreSQL for every test that needs one.

``JOBSYS_TEST_DATABASE_URL`` names a server (CI: the machine's, 127.0.0.1:5432);
without it the suite starts the embedded server itself in a temporary home and
stops it at the end. A template database is migrated once per session; each test
that asks for ``db_url`` gets a fresh ``CREATE DATABASE ... TEMPLATE`` clone (fast,
isolated, real commits so LISTEN/NOTIFY works) dropped afterwards.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from jobsys.db import url as db_url_mod
from jobsys.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "config"
TEST_URL_VAR = "JOBSYS_TEST_DATABASE_URL"
_CALLER_TEST_URL = os.environ.get(TEST_URL_VAR)

# The tiers: unit/ (no database), integration/ (in-process, real PostgreSQL),
# acceptance/ (the real binary and worker processes). Acceptance tests share the
# integration tier's support modules (rt_support, schedule_support, ...).
_INTEGRATION = str(REPO / "tests" / "integration")
if _INTEGRATION not in sys.path:
    sys.path.append(_INTEGRATION)


def _scrub_env() -> None:
    for key in list(os.environ):
        if key.startswith("JOBSYS_"):
            del os.environ[key]


_scrub_env()  # a developer's shell must not leak into tests


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in list(os.environ):
        if key.startswith("JOBSYS_"):
            monkeypatch.delenv(key)
    yield
    # jobsys.defer without a connection pools connections per process: none may
    # outlive the test (its database is dropped next).
    from jobsys.db import producers

    producers.close()
    # Nor may jobsys.publish's URL, resolved from the environment once per process.
    import jobsys

    jobsys._url_cache = None


@pytest.fixture(autouse=True)
def _no_embedded_server_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """A test that uses ``tmp_path`` leaves no embedded PostgreSQL running under it.

    Anything resolving the environment's database without a URL (a CLI command, a
    task's ``jobsys.publish`` run by an in-process worker) starts the embedded server
    under ``JOBSYS_HOME`` (``tmp_path/cli-home`` for the ``cli`` fixture), and by
    design it keeps running after that (README, "Database"): such a test talked to
    another database than its own, and left a server behind. It is stopped here and
    the test fails, naming the home."""
    tmp = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp is None:
        return
    homes = [p.parent.parent for p in (*tmp.glob("*/pgdata/postmaster.pid"),
                                       *tmp.glob("*/*/pgdata/postmaster.pid"))]  # fmt: skip
    if not homes:
        return
    from jobsys.db import embedded

    running = [home for home in homes if embedded.status(home).running]
    for home in running:
        embedded.stop(home)
    assert not running, (
        f"an embedded PostgreSQL was left running under {[str(h) for h in running]} "
        "(something resolved the environment's database without a URL: give the "
        "test's JOBSYS_DATABASE_URL)"
    )


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    """URL of a maintenance database on the test server (server or embedded)."""
    if _CALLER_TEST_URL:
        yield _CALLER_TEST_URL
        return
    import shutil
    import tempfile

    from jobsys.db import embedded

    # Not under pytest's basetemp: pytest deletes all but its 3 latest basetemps, so a
    # few concurrent pytest runs would remove a live server's data directory.
    home = Path(tempfile.mkdtemp(prefix="jobsys-test-pg-"))
    st = embedded.start(home)
    try:
        yield f"postgresql://postgres@/postgres?host={st.socket_dir}&port={st.port}"
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)


def _admin(url: str) -> psycopg.Connection:
    return psycopg.connect(url, autocommit=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_url: str) -> Iterator[str]:
    """A database migrated to head, used as the template of every test database."""
    from jobsys.db import migrate

    name = f"jobsys_tpl_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    with _admin(pg_admin_url) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = db_url_mod.with_database(pg_admin_url, name)
    migrate.upgrade(url)
    try:
        yield name
    finally:
        with _admin(pg_admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def fresh_database(admin_url: str, template: str | None) -> Iterator[str]:
    name = f"jobsys_t_{uuid.uuid4().hex[:12]}"
    with _admin(admin_url) as conn:
        if template:
            conn.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        else:
            conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield db_url_mod.with_database(admin_url, name)
    finally:
        with _admin(admin_url) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def db_url(pg_admin_url: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test."""
    with fresh_database(pg_admin_url, template_db) as url:
        yield url


@pytest.fixture
def empty_db_url(pg_admin_url: str) -> Iterator[str]:
    """A fresh database with no schema at all."""
    with fresh_database(pg_admin_url, None) as url:
        yield url


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(
        database_url=db_url, home=tmp_path / "home", config_dir=CONFIG_DIR, operator="tester"
    )


@dataclass
class CliResult:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> object:
        import json

        return json.loads(self.stdout)


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Run ``jobsys ARGS`` in-process; returns exit code, stdout and stderr."""
    from jobsys.cli.main import main

    monkeypatch.setenv("JOBSYS_HOME", str(tmp_path / "cli-home"))
    monkeypatch.setenv("JOBSYS_CONFIG_DIR", str(CONFIG_DIR))
    monkeypatch.setenv("COLUMNS", "200")

    def invoke(
        *args: str, env: dict[str, str] | None = None, input: str | None = None
    ) -> CliResult:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        out, err = io.StringIO(), io.StringIO()
        old_in = sys.stdin
        if input is not None:
            sys.stdin = io.StringIO(input)
        try:
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
                code = main(list(args))
        finally:
            sys.stdin = old_in
        return CliResult(code, out.getvalue(), err.getvalue())

    return invoke


@pytest.fixture
def throwaway_server() -> Iterator[tuple[Path, str]]:
    """A throwaway embedded server the test may stop and start (never the shared one):
    (its home, its URL)."""
    import shutil
    import tempfile

    from jobsys.db import embedded

    # Its own short folder: a socket path must stay under ~100 bytes.
    home = Path(tempfile.mkdtemp(prefix="jobsys-restart-"))
    st = embedded.start(home)
    assert st.url is not None
    try:
        yield home, st.url
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
