"""No jobsys connection changes a setting for its whole session (``SET name ...``,
``set_config(..., false)``): through a transaction-mode PgBouncer the server
connection is shared, and a session setting stays on it for the next client (2 s
``lock_timeout`` of the search-index pass, once). A bound goes in the connection's
startup options (``jobsys.db.connect.connect_with_settings``) or is transaction-local
(``SET LOCAL``, ``set_config(..., true)``). Migrations (``migrations/env.py``) run
against the server directly and are not in ``jobsys/``."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator

from source_walk import PACKAGE, found_outside

#: ``SET x`` at the start of a statement, but not ``SET LOCAL`` / ``SET TRANSACTION``
#: / ``SET CONSTRAINTS`` (transaction-scoped), nor ``UPDATE ... SET col = ...`` or
#: ``ON DELETE SET NULL``.
#: Upper case: jobsys writes SQL keywords so ("Set it to ..." in a message is not SQL).
SESSION_SET = re.compile(r"^\s*SET\s+(?!LOCAL\b|TRANSACTION\b|CONSTRAINTS\b|NULL\b|DEFAULT\b)\w")
SESSION_CONFIG = re.compile(r"set_config\s*\([^)]*,\s*false\s*\)", re.I)


def _texts(source: str) -> Iterator[tuple[int, str]]:
    """Each string literal (an f-string as one text, its fields as ``0``)."""
    tree = ast.parse(source)
    parts = {
        id(v) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for v in node.values
    }
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in parts:
                yield node.lineno, node.value
        elif isinstance(node, ast.JoinedStr):
            yield (
                node.lineno,
                "".join(v.value if isinstance(v, ast.Constant) else "0" for v in node.values),
            )


def session_settings(source: str) -> Iterator[str]:
    for line, text in sorted(_texts(source)):
        if SESSION_SET.match(text) or SESSION_CONFIG.search(text):
            yield f"{line}: {text.strip()[:60]!r}"


def test_the_walk_finds_a_session_setting() -> None:
    found = list(
        session_settings(
            'conn.execute(f"SET lock_timeout = {ms}")\n'
            "q = \"SELECT set_config('statement_timeout', '1s', false)\"\n"
            'ok = "SET LOCAL lock_timeout = 1"\n'
            "ok2 = \"SELECT set_config('enable_bitmapscan', 'off', true)\"\n"
            'ok3 = """\nUPDATE t\n   SET status = 1"""\n'
        )
    )
    assert [f.split(":")[0] for f in found] == ["1", "2"]


def test_no_connection_of_jobsys_sets_a_session_setting() -> None:
    assert found_outside(PACKAGE, (), session_settings) == []
