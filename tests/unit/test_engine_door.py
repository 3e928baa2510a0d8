"""The engine is the only door to Procrastinate, in the code and not only in the imports
(issue #11): outside ``jobsys/engine/`` no module reaches a Procrastinate object's
``connector`` (the pool of a running App is ``jobsys.engine.pool.of`` /
``jobsys.engine.pool.connection``) or asks a task for its retry decision
(``jobsys.engine.api.strategy_retries``), and the word ``procrastinate`` stands only in
comments and docstrings (the issue's ``grep -rn procrastinate jobsys`` check, without
a grep's false alarms). The import-linter contract cannot see either: both go through
objects handed in, not imports. The walk reads the source (AST)."""

from __future__ import annotations

import ast

from tests.source_walk import PACKAGE, found_outside

#: The door itself (paths under ``jobsys/``).
DOOR = ("engine/",)
#: Procrastinate's attributes only the engine reads (the pool: ``engine.pool``; a task's
#: retry decision: ``engine.api.strategy_retries``).
ENGINE_ATTRIBUTES = {"connector", "get_retry_exception"}


def _docstrings(tree: ast.AST) -> set[int]:
    """ids of the string constants that are docstrings."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def back_doors(source: str) -> list[str]:
    """``line: what`` for each reach past the engine in ``source``: a read of an engine
    attribute (``x.connector``, ``getattr(x, "connector")``), or the word procrastinate
    in code (a name, an import, a string that is not a docstring)."""
    tree = ast.parse(source)
    docstrings = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        words: list[str] = []
        if isinstance(node, ast.Attribute):
            if node.attr in ENGINE_ATTRIBUTES:
                found.append(f"{node.lineno}: .{node.attr}")
            words.append(node.attr)
        elif isinstance(node, ast.Name):
            words.append(node.id)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if node.value in ENGINE_ATTRIBUTES:
                found.append(f"{node.lineno}: {node.value!r}")
            if id(node) not in docstrings:
                words.append(node.value)
        elif isinstance(node, ast.Import | ast.ImportFrom):
            words += [alias.name for alias in node.names]
            words.append(getattr(node, "module", None) or "")
        if any("procrastinate" in word.lower() for word in words):
            found.append(f"{getattr(node, 'lineno', 0)}: procrastinate in code")
    return sorted(set(found))


def test_nothing_outside_the_engine_reaches_procrastinate() -> None:
    assert found_outside(PACKAGE, DOOR, back_doors) == []


def test_a_back_door_is_found() -> None:
    """The shapes the code had before (the pool through the App's connector, a getattr
    of it) and a Procrastinate name in code are found; docstrings and comments are not."""
    source = (
        '"""Rows of procrastinate_jobs."""\n'
        "async def run(context, conn_or_app):\n"
        '    """Uses procrastinate_workers."""\n'
        "    # procrastinate_jobs, in a comment\n"
        "    async with context.app.connector.pool.connection() as conn:\n"
        "        await conn.execute('SELECT * FROM procrastinate_jobs')\n"
        '    return getattr(conn_or_app, "connector", None)\n'
        "import procrastinate.exceptions\n"
        "retried = task.get_retry_exception(exception=exc, job=job)\n"
    )
    assert back_doors(source) == [
        "5: .connector",
        "6: procrastinate in code",
        "7: 'connector'",
        "8: procrastinate in code",
        "9: .get_retry_exception",
    ]
