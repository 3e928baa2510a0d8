"""workers view and failure search: fenced processes, lane concurrency, the host and
pid of the process that ran a failed job, trigram indexes for ``--error``

- ``jobsys_worker_processes.status`` gains ``fenced`` (a process that beat after a
  reaper took it for dead marks itself so before it exits) and ``concurrency``
  (lane name to its number of slots, as that process ran them: hosts may differ);
- ``jobsys_failures`` gains ``host`` and ``pid``: which process ran the attempt;
- ``failures list --error TEXT`` is a case-insensitive substring of the message or
  the error class: ``pg_trgm`` GIN indexes keep it an index scan at millions of rows
  (pg_trgm is a trusted contrib extension, shipped with PostgreSQL and with the
  embedded server).

Revision ID: 0009_workers_failure_search
Revises: 0008_fanout_item_jobs
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0009_workers_failure_search"
down_revision: str | Sequence[str] | None = "0008_fanout_item_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STATUSES = "status IN ('running', 'draining', 'stopped', 'dead')"
NEW_STATUSES = "status IN ('running', 'draining', 'stopped', 'dead', 'fenced')"


def upgrade() -> None:
    op.drop_constraint(
        op.f("ck_jobsys_worker_processes_status"), "jobsys_worker_processes", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_jobsys_worker_processes_status"), "jobsys_worker_processes", NEW_STATUSES
    )
    op.add_column(
        "jobsys_worker_processes",
        sa.Column(
            "concurrency",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
    )
    op.add_column("jobsys_failures", sa.Column("host", sa.Text(), nullable=True))
    op.add_column("jobsys_failures", sa.Column("pid", sa.Integer(), nullable=True))
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    for column in ("message", "error_class"):
        op.create_index(
            f"ix_jobsys_failures_{column}_trgm",
            "jobsys_failures",
            [column],
            postgresql_using="gin",
            postgresql_ops={column: "gin_trgm_ops"},
        )


def downgrade() -> None:
    for column in ("message", "error_class"):
        op.drop_index(f"ix_jobsys_failures_{column}_trgm", table_name="jobsys_failures")
    op.drop_column("jobsys_failures", "pid")
    op.drop_column("jobsys_failures", "host")
    op.drop_column("jobsys_worker_processes", "concurrency")
    op.execute("UPDATE jobsys_worker_processes SET status = 'dead' WHERE status = 'fenced'")
    op.drop_constraint(
        op.f("ck_jobsys_worker_processes_status"), "jobsys_worker_processes", type_="check"
    )
    op.create_check_constraint(
        op.f("ck_jobsys_worker_processes_status"), "jobsys_worker_processes", OLD_STATUSES
    )
