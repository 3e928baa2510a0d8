"""jobs: search by args (``jobs list --arg``, ``--arg-contains``) and the audit table of
bulk actions (``jobs cancel --all``, ``jobs delete --all``, ``queues purge``)

On Procrastinate's job table (the drift check ignores ``procrastinate_*`` objects, so
these are not in the models):

- GIN ``jsonb_path_ops`` on ``args``: ``args @> '{"account_id": 42}'`` is an index scan;
- ``jobsys_args_text(args)``: every string and number value of the args, one per line
  (IMMUTABLE: ``jsonb_path_query`` is), with a pg_trgm GIN index for
  ``--arg-contains`` (case-insensitive substring; the caller re-checks on redacted args).

Revision ID: 0010_job_search_bulk
Revises: 0009_workers_failure_search
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010_job_search_bulk"
down_revision: str | Sequence[str] | None = "0009_workers_failure_search"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ARGS_TEXT = r"""
CREATE OR REPLACE FUNCTION jobsys_args_text(args jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT coalesce(string_agg(v #>> '{}', E'\n'), '')
      FROM jsonb_path_query(args, 'strict $.**') AS v
     WHERE jsonb_typeof(v) IN ('string', 'number')
$$
"""


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(ARGS_TEXT)
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_jobs_args_path "
        "ON procrastinate_jobs USING gin (args jsonb_path_ops)"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_jobs_args_text_trgm "
        "ON procrastinate_jobs USING gin (jobsys_args_text(args) gin_trgm_ops)"
    )
    op.create_table(
        "jobsys_bulk_actions",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column(
            "filters",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("matched", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "counts",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("status", sa.Text(), server_default="running", nullable=False),
        sa.Column(
            "started_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("finished_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.CheckConstraint(
            "action IN ('jobs_cancel', 'jobs_delete', 'queues_purge')",
            name=op.f("ck_jobsys_bulk_actions_action"),
        ),
        sa.CheckConstraint(
            "status IN ('running', 'finished')", name=op.f("ck_jobsys_bulk_actions_status")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobsys_bulk_actions")),
    )
    op.create_index(
        "ix_jobsys_bulk_actions_started",
        "jobsys_bulk_actions",
        [sa.text("started_at DESC")],
    )


def downgrade() -> None:
    op.drop_index("ix_jobsys_bulk_actions_started", table_name="jobsys_bulk_actions")
    op.drop_table("jobsys_bulk_actions")
    op.execute("DROP INDEX IF EXISTS ix_jobsys_jobs_args_text_trgm")
    op.execute("DROP INDEX IF EXISTS ix_jobsys_jobs_args_path")
    op.execute("DROP FUNCTION IF EXISTS jobsys_args_text(jsonb)")
