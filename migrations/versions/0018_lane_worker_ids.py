"""runtime: name a worker process's lane worker ids after what they are

``jobsys_worker_processes.procrastinate_worker_ids`` becomes ``lane_worker_ids``: one
id per lane of the process (a row of the engine's worker table). Only
``jobsys/engine/`` and ``migrations/`` name Procrastinate's objects; a jobsys column
named after the library was the last such name outside them. A rename: no data moves.

Revision ID: 0018_lane_worker_ids
Revises: 0017_drop_args_text_trgm
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0018_lane_worker_ids"
down_revision: str | Sequence[str] | None = "0017_drop_args_text_trgm"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.alter_column(
        "jobsys_worker_processes", "procrastinate_worker_ids", new_column_name="lane_worker_ids"
    )


def downgrade() -> None:
    op.alter_column(
        "jobsys_worker_processes", "lane_worker_ids", new_column_name="procrastinate_worker_ids"
    )
