"""Alembic environment for jobsys.

Alembic owns the whole schema: revision 0001 installs Procrastinate's schema (a
pinned snapshot), later revisions add jobsys's tables. Autogenerate and drift checks
ignore every ``procrastinate_*`` object, which only Procrastinate's own SQL may
change. Migrations run one transaction each, under lock and statement timeouts,
serialised across processes by an advisory lock.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy import create_engine, pool, text

from jobsys.db.connect import driver_options
from jobsys.db.migrate import include_object, sqlalchemy_url
from jobsys.db.models import metadata

MIGRATION_LOCK_KEY = 727_100_001  # pg_advisory_lock key held while migrating
LOCK_TIMEOUT = "10s"
STATEMENT_TIMEOUT = "10min"

config = context.config


def _url() -> str:
    url = config.attributes.get("database_url")
    if url is None:
        from jobsys.db.connect import resolve
        from jobsys.settings import from_env

        url = resolve(from_env()).url
    return sqlalchemy_url(url)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=metadata,
        include_object=include_object,
        literal_binds=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection: Any = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = create_engine(
        _url(), poolclass=pool.NullPool, connect_args=driver_options("jobsys-migrate")
    )
    with engine.connect() as connection:
        connection.execute(text(f"SET lock_timeout = '{LOCK_TIMEOUT}'"))
        connection.execute(text(f"SET statement_timeout = '{STATEMENT_TIMEOUT}'"))
        connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        connection.commit()
        try:
            _run(connection)
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": MIGRATION_LOCK_KEY})
            connection.commit()
    engine.dispose()


def _run(connection: Any) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        include_object=include_object,
        transaction_per_migration=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
