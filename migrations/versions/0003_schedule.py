"""schedule: fan-out run spec, queued runs, skipped ticks

Revision ID: 0003_schedule
Revises: 0002_jobsys_core
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003_schedule"
down_revision: str | Sequence[str] | None = "0002_jobsys_core"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "jobsys_fanout_runs",
        sa.Column(
            "spec",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.drop_constraint(op.f("ck_jobsys_fanout_runs_status"), "jobsys_fanout_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_jobsys_fanout_runs_status"),
        "jobsys_fanout_runs",
        "status IN ('queued', 'running', 'finished', 'failed', 'cancelled')",
    )
    op.drop_constraint(
        op.f("ck_jobsys_schedule_ticks_status"), "jobsys_schedule_ticks", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_jobsys_schedule_ticks_status"),
        "jobsys_schedule_ticks",
        "status IN ('enqueued', 'missed', 'manual', 'skipped')",
    )


def downgrade() -> None:
    op.execute("DELETE FROM jobsys_schedule_ticks WHERE status = 'skipped'")
    op.execute("UPDATE jobsys_fanout_runs SET status = 'cancelled' WHERE status = 'queued'")
    op.drop_constraint(
        op.f("ck_jobsys_schedule_ticks_status"), "jobsys_schedule_ticks", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_jobsys_schedule_ticks_status"),
        "jobsys_schedule_ticks",
        "status IN ('enqueued', 'missed', 'manual')",
    )
    op.drop_constraint(op.f("ck_jobsys_fanout_runs_status"), "jobsys_fanout_runs", type_="check")
    op.create_check_constraint(
        op.f("ck_jobsys_fanout_runs_status"),
        "jobsys_fanout_runs",
        "status IN ('running', 'finished', 'failed', 'cancelled')",
    )
    op.drop_column("jobsys_fanout_runs", "spec")
