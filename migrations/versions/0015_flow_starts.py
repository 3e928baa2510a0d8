"""flow: the ledger of starts under flow limits (rates and per-key concurrency)

Revision ID: 0015_flow_starts
Revises: 0014_schedule_entry_issues
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0015_flow_starts"
down_revision: str | Sequence[str] | None = "0014_schedule_entry_issues"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobsys_flow_starts",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("bucket", sa.Text(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "started_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("clock_timestamp()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobsys_flow_starts")),
    )
    op.create_index("ix_jobsys_flow_starts_bucket", "jobsys_flow_starts", ["bucket", "started_at"])
    op.create_index("ix_jobsys_flow_starts_job", "jobsys_flow_starts", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_jobsys_flow_starts_job", table_name="jobsys_flow_starts")
    op.drop_index("ix_jobsys_flow_starts_bucket", table_name="jobsys_flow_starts")
    op.drop_table("jobsys_flow_starts")
