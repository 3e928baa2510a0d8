"""live: read indexes for the dashboard, metrics and jobs browser

Two indexes on Procrastinate's tables (the drift check ignores ``procrastinate_*``
objects, so they are not in the models):

- active jobs by queue: the lanes panel and per-queue oldest wait read only
  ``todo``/``doing`` rows, index-only, however many finished jobs the table holds;
- job events by type and time: throughput per minute, pickup latency and
  ``jobs list --since`` read the last minutes of events, not the whole table.

Revision ID: 0005_live_read_indexes
Revises: 0004_retry
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005_live_read_indexes"
down_revision: str | Sequence[str] | None = "0004_retry"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_live_jobs_active_queue "
        "ON procrastinate_jobs (queue_name, status, id) INCLUDE (scheduled_at) "
        "WHERE status IN ('todo', 'doing')"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_live_events_type_at "
        "ON procrastinate_events (type, at)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_jobsys_live_events_type_at")
    op.execute("DROP INDEX IF EXISTS ix_jobsys_live_jobs_active_queue")
