"""retry pipeline: partial indexes on jobsys_failures for the automatic retry

Revision ID: 0004_retry
Revises: 0003_schedule
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_retry"
down_revision: str | Sequence[str] | None = "0003_schedule"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobsys_failures_retry_pending",
        "jobsys_failures",
        ["id"],
        unique=False,
        postgresql_where=sa.text("(retry_state ->> 'outcome') = 'pending'"),
    )
    op.create_index(
        "ix_jobsys_failures_auto_candidates",
        "jobsys_failures",
        ["occurred_at", "id"],
        unique=False,
        postgresql_where=sa.text("kind = 'transient' AND retryable AND NOT will_retry"),
    )


def downgrade() -> None:
    op.drop_index("ix_jobsys_failures_auto_candidates", table_name="jobsys_failures")
    op.drop_index("ix_jobsys_failures_retry_pending", table_name="jobsys_failures")
