"""failures: indexes for the profile and lane filters

Revision ID: 0006_failures_filters
Revises: 0005_live_read_indexes
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_failures_filters"
down_revision: str | Sequence[str] | None = "0005_live_read_indexes"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_jobsys_failures_profile_occurred",
        "jobsys_failures",
        ["profile_id", sa.literal_column("occurred_at DESC")],
        unique=False,
    )
    op.create_index(
        "ix_jobsys_failures_lane_occurred",
        "jobsys_failures",
        ["lane", sa.literal_column("occurred_at DESC")],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_jobsys_failures_lane_occurred", table_name="jobsys_failures")
    op.drop_index("ix_jobsys_failures_profile_occurred", table_name="jobsys_failures")
