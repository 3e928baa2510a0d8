"""Every psycopg connection jobsys opens disables server-side prepared statements
(``driver_options``), or a transaction-mode pooler kills the worker with
``DuplicatePreparedStatement``. Found by reading the source: a new connection site
without them fails here."""

from __future__ import annotations

import ast
from pathlib import Path

from jobsys.db.connect import driver_options

REPO = Path(__file__).resolve().parents[2]


def _opens_a_connection(call: ast.Call) -> bool:
    func = call.func
    if isinstance(func, ast.Attribute) and func.attr == "connect":
        owner = func.value
        name = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", "")
        return name in {"psycopg", "AsyncConnection", "Connection"}
    name = func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")
    return name in {"create_engine", "FastPsycopgConnector", "AsyncConnectionPool"}


def _uses_driver_options(call: ast.Call) -> bool:
    return any("driver_options" in ast.dump(k.value) for k in call.keywords)


def connection_sites() -> list[tuple[str, int, bool]]:
    sites = []
    for path in [*(REPO / "jobsys").rglob("*.py"), *(REPO / "migrations").rglob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and _opens_a_connection(node):
                sites.append((str(path.relative_to(REPO)), node.lineno, _uses_driver_options(node)))
    return sites


def test_prepared_statements_are_off() -> None:
    assert driver_options()["prepare_threshold"] is None
    assert driver_options("x")["application_name"] == "x"


def test_every_connection_site_passes_the_driver_options() -> None:
    sites = connection_sites()
    # The pool, the listener, connect(), dashboard, subscriber, migrations, embedded.
    assert len(sites) >= 8, sites
    assert [s for s in sites if not s[2]] == []
