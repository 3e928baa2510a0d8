"""Running Alembic programmatically: upgrade, downgrade, current, drift check.

Alembic and SQLAlchemy are imported inside the functions so that commands which do
not migrate stay fast to start.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobsys import engine
from jobsys.db import url as db_url
from jobsys.db.connect import driver_options
from jobsys.errors import DatabaseUnavailable, SchemaError, UsageError

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
IGNORED_PREFIXES = (engine.OBJECT_PREFIX,)
#: Every table of jobsys's own schema starts so (``jobsys.db.models``).
OWNED_PREFIX = "jobsys_"


def include_object(
    obj: Any, name: str | None, type_: str, reflected: bool, compare_to: Any
) -> bool:
    """Autogenerate/drift filter: Procrastinate's objects are never ours to touch, and
    neither are the application's tables sharing the database (a fan-out source, the
    demo's ``demo_accounts``): a table the models do not know is only jobsys's
    business when its name says it is jobsys's."""
    if name and name.startswith(IGNORED_PREFIXES):
        return False
    if type_ == "foreign_key_constraint" and any(
        str(getattr(e, "target_fullname", "")).startswith(IGNORED_PREFIXES)
        for e in getattr(obj, "elements", ())
    ):
        return False  # a key to Procrastinate's table is the migration's (jobsys_job_search)
    if type_ == "table" and reflected and compare_to is None:
        return bool(name and name.startswith(OWNED_PREFIX))
    table = getattr(obj, "table", None)
    return table is None or not str(getattr(table, "name", "")).startswith(IGNORED_PREFIXES)


def describe_difference(diff: Any) -> str:
    """One line for one of Alembic's ``compare_metadata`` differences: the operation and
    the names it concerns (``remove_column: jobsys_failures.surprise``), not reprs."""
    if isinstance(diff, list):  # modify_* differences of one column come grouped
        return "; ".join(describe_difference(d) for d in diff)
    op, *rest = diff
    names: list[str] = []
    for item in rest:
        if isinstance(item, str):
            names.append(item)
        elif isinstance(getattr(item, "name", None), str):
            table = getattr(item, "table", None)
            owner = getattr(table, "name", None)
            if owner and owner != item.name:
                if names and names[-1] == owner:  # ("remove_column", None, table, column)
                    names.pop()
                names.append(f"{owner}.{item.name}")
            else:
                names.append(item.name)
        elif item is not None and not isinstance(item, dict):
            names.append(str(item))  # a column type, a default
    return f"{op}: {' '.join(names)}"


def sqlalchemy_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _config(url: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["database_url"] = url
    return cfg


@contextlib.contextmanager
def _unreachable_as_error(url: str) -> Iterator[None]:
    """SQLAlchemy's connection errors as a password-free :class:`DatabaseUnavailable`."""
    import sqlalchemy.exc

    try:
        yield
    except sqlalchemy.exc.OperationalError as exc:
        detail = db_url.scrub(str(exc.orig).strip().splitlines()[0], url)
        raise DatabaseUnavailable(
            f"cannot connect to the database at {db_url.mask(url)}: {detail}",
            hint=db_url.UNREACHABLE_HINT,
        ) from None


def heads() -> list[str]:
    from alembic.script import ScriptDirectory

    return list(ScriptDirectory(str(MIGRATIONS_DIR)).get_heads())


def all_revisions() -> list[str]:
    from alembic.script import ScriptDirectory

    return [s.revision for s in ScriptDirectory(str(MIGRATIONS_DIR)).walk_revisions()]


def check_revision(revision: str) -> None:
    """A target Alembic can name: ``head``, ``base``, a relative step (``-1``, ``+2``,
    ``head-1``) or a known revision; else a usage error listing the known ones, before
    anything connects."""
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    if re.fullmatch(r"[+-]\d+", revision):
        return
    target = re.sub(r"[+-]\d+$", "", revision.split("@")[-1])
    if target in ("head", "heads", "base"):
        return
    try:
        ScriptDirectory(str(MIGRATIONS_DIR)).get_revisions(target)
        return
    except CommandError:
        pass
    raise UsageError(
        f"unknown revision {revision!r}.",
        hint=f"Known revisions: head, base, {', '.join(all_revisions())}.",
    )


@contextlib.contextmanager
def _target_problems_as_usage(revision: str) -> Iterator[None]:
    """What Alembic refuses about a target (an ambiguous prefix, a step past the end) as
    a usage error naming it; nothing has been applied when it raises."""
    from alembic.util import CommandError

    try:
        yield
    except CommandError as exc:
        raise UsageError(
            f"revision {revision!r}: {exc}",
            hint=f"Known revisions: head, base, {', '.join(all_revisions())}.",
        ) from None


def upgrade(url: str, revision: str = "head") -> None:
    from alembic import command

    check_revision(revision)
    with _unreachable_as_error(url), _target_problems_as_usage(revision):
        command.upgrade(_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    from alembic import command

    check_revision(revision)
    with _unreachable_as_error(url), _target_problems_as_usage(revision):
        command.downgrade(_config(url), revision)


def current(url: str) -> list[str]:
    """Revisions recorded in the database (empty when nothing is installed)."""
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    engine = create_engine(
        sqlalchemy_url(url), poolclass=pool.NullPool, connect_args=driver_options("jobsys-migrate")
    )
    try:
        with _unreachable_as_error(url), engine.connect() as conn:
            return list(MigrationContext.configure(conn).get_current_heads())
    finally:
        engine.dispose()


def drift(url: str) -> list[str]:
    """Differences between the models and the database (empty when in sync)."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    from jobsys.db.models import metadata

    engine = create_engine(
        sqlalchemy_url(url), poolclass=pool.NullPool, connect_args=driver_options("jobsys-migrate")
    )
    try:
        with _unreachable_as_error(url), engine.connect() as conn:
            revisions = set(MigrationContext.configure(conn).get_current_heads())
            if revisions != set(heads()):
                raise SchemaError(
                    f"the database is at {', '.join(sorted(revisions)) or 'no revision'}, "
                    f"the code's head is {', '.join(heads())}.",
                    hint="Run `jobsys db upgrade`.",
                )
            ctx = MigrationContext.configure(
                conn,
                opts={"include_object": include_object, "compare_type": True},
            )
            return [describe_difference(diff) for diff in compare_metadata(ctx, metadata)]
    finally:
        engine.dispose()
