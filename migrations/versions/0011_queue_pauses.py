"""flow: queue pauses in effect and the audit of every pause and resume

Revision ID: 0011_queue_pauses
Revises: 0010_job_search_bulk
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011_queue_pauses"
down_revision: str | Sequence[str] | None = "0010_job_search_bulk"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "jobsys_queue_pauses",
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column(
            "paused_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("paused_by", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("until", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("target", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("queue", name=op.f("pk_jobsys_queue_pauses")),
    )
    op.create_table(
        "jobsys_queue_pause_events",
        sa.Column("id", sa.BigInteger(), autoincrement=True, nullable=False),
        sa.Column("queue", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("until", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("target", sa.Text(), nullable=False),
        sa.Column("was_paused", sa.Boolean(), nullable=False),
        sa.Column(
            "created_at",
            postgresql.TIMESTAMP(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "action IN ('pause', 'resume')", name=op.f("ck_jobsys_queue_pause_events_action")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobsys_queue_pause_events")),
    )
    op.create_index(
        "ix_jobsys_queue_pause_events_queue",
        "jobsys_queue_pause_events",
        ["queue", "created_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_jobsys_queue_pause_events_queue", table_name="jobsys_queue_pause_events")
    op.drop_table("jobsys_queue_pause_events")
    op.drop_table("jobsys_queue_pauses")
