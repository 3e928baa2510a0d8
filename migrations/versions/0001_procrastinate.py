"""Install Procrastinate's schema at the pinned version.

Revision ID: 0001_procrastinate
Revises:
Create Date: 2026-11-29
"""

from collections.abc import Sequence

from alembic import op

from jobsys.engine.schema import PINNED_VERSION, snapshot_sql

revision: str = "0001_procrastinate"
down_revision: str | Sequence[str] | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Drops every object Procrastinate's schema creates (functions, tables, types).
DROP_PROCRASTINATE = """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT oid::regprocedure AS sig FROM pg_proc
             WHERE proname LIKE 'procrastinate\\_%' AND pronamespace = 'public'::regnamespace
    LOOP EXECUTE 'DROP FUNCTION IF EXISTS ' || r.sig || ' CASCADE'; END LOOP;
    FOR r IN SELECT tablename FROM pg_tables
             WHERE schemaname = 'public' AND tablename LIKE 'procrastinate\\_%'
    LOOP EXECUTE 'DROP TABLE IF EXISTS ' || quote_ident(r.tablename) || ' CASCADE'; END LOOP;
    FOR r IN SELECT typname FROM pg_type
             WHERE typnamespace = 'public'::regnamespace AND typname LIKE 'procrastinate\\_%'
               AND typtype IN ('e', 'c')
    LOOP EXECUTE 'DROP TYPE IF EXISTS ' || quote_ident(r.typname) || ' CASCADE'; END LOOP;
END $$;
"""


def _execute_raw(sql: str) -> None:
    # The driver connection runs the script as-is: no bind-parameter parsing of
    # the schema's colons and percent signs.
    op.get_bind().connection.driver_connection.execute(sql)  # type: ignore[union-attr]


def upgrade() -> None:
    _execute_raw(f"-- procrastinate {PINNED_VERSION}\n" + snapshot_sql(PINNED_VERSION))


def downgrade() -> None:
    _execute_raw(DROP_PROCRASTINATE)
