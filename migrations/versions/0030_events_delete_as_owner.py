"""engine: a job's events are deleted with the rights of their owner, as the cascade did

Migration 0029 replaced the foreign key ``procrastinate_events_job_id_fkey`` (``ON
DELETE CASCADE``) with the statement trigger function ``jobsys_job_events_delete_v1``.
A cascade runs with the rights of the events table's owner; the trigger function ran
with the rights of whoever deleted the job (``SECURITY INVOKER``). So a role granted
``DELETE`` on ``procrastinate_jobs`` but nothing on ``procrastinate_events`` could delete
jobs before 0029 and got ``permission denied for table procrastinate_events`` after
(its ``jobs delete``, retention, a batched acknowledgement with ``delete_jobs``).

The function is now ``SECURITY DEFINER`` (it runs as its owner, the role that migrated,
which owns ``procrastinate_events``) with a fixed ``search_path``: ``pg_catalog``, the
schema ``procrastinate_events`` is in (read when migrating: jobsys's migrations create
their objects in the migrating session's current schema), then ``pg_temp``, so that
no object of the deleting session's own (a temporary table named
``procrastinate_events``, an operator in another schema) stands in for the owner's. It
is a trigger function: nobody can call it directly.

Downgrade restores 0029's definition (``SECURITY INVOKER``, no ``search_path`` of its
own).

Revision ID: 0030_events_delete_as_owner
Revises: 0029_events_without_foreign_key
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0030_events_delete_as_owner"
down_revision: str | Sequence[str] | None = "0029_events_without_foreign_key"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTION = "jobsys_job_events_delete_v1()"


def upgrade() -> None:
    # The events table's schema, quoted as an identifier where it needs it.
    schema = op.get_bind().scalar(
        sa.text(
            "SELECT relnamespace::regnamespace::text FROM pg_class "
            "WHERE oid = 'procrastinate_events'::regclass"
        )
    )
    op.execute(
        f"ALTER FUNCTION {FUNCTION} SECURITY DEFINER "
        f"SET search_path = pg_catalog, {schema}, pg_temp"
    )


def downgrade() -> None:
    op.execute(f"ALTER FUNCTION {FUNCTION} SECURITY INVOKER RESET search_path")
