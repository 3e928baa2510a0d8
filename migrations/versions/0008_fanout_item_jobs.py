"""schedule: the id range of a fan-out run's item jobs

Revision ID: 0008_fanout_item_jobs
Revises: 0007_runtime_worker_ids
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_fanout_item_jobs"
down_revision: str | Sequence[str] | None = "0007_runtime_worker_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("jobsys_fanout_runs", sa.Column("first_item_job_id", sa.BigInteger()))
    op.add_column("jobsys_fanout_runs", sa.Column("last_item_job_id", sa.BigInteger()))


def downgrade() -> None:
    op.drop_column("jobsys_fanout_runs", "last_item_job_id")
    op.drop_column("jobsys_fanout_runs", "first_item_job_id")
