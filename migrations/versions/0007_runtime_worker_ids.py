"""runtime: link worker processes to their Procrastinate workers

Revision ID: 0007_runtime_worker_ids
Revises: 0006_failures_filters
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007_runtime_worker_ids"
down_revision: str | Sequence[str] | None = "0006_failures_filters"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobsys_worker_processes",
        sa.Column(
            "procrastinate_worker_ids",
            postgresql.ARRAY(sa.BigInteger()),
            server_default=sa.text("'{}'"),
            nullable=False,
        ),
    )


def downgrade() -> None:
    op.drop_column("jobsys_worker_processes", "procrastinate_worker_ids")
