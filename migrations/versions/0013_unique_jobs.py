"""unique jobs: the key of every job deferred as unique (``unique_for``)

Revision ID: 0013_unique_jobs
Revises: 0012_claim_at_depth
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0013_unique_jobs"
down_revision: str | Sequence[str] | None = "0012_claim_at_depth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobsys_unique_jobs",
        sa.Column("job_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("job_id", name=op.f("pk_jobsys_unique_jobs")),
    )
    op.create_index(
        "ix_jobsys_unique_jobs_key", "jobsys_unique_jobs", ["key", sa.text("job_id DESC")]
    )


def downgrade() -> None:
    op.drop_index("ix_jobsys_unique_jobs_key", table_name="jobsys_unique_jobs")
    op.drop_table("jobsys_unique_jobs")
