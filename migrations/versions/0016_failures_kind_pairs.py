"""failures: (column, kind, occurred_at DESC, id DESC) for queue, task and lane

The failures list combines filters (``failures list --kind auth --queue profiles``,
the web console's ``?kind=...&queue=...``). With one index per column, a pair that
matches few rows was read through one filter's whole range (0.7-1.6 s at 1,000,000
failures): the planner walked ``ix_jobsys_failures_occurred`` or one column's index and
dropped nearly every row. Kind is the filter operators pair with a queue, task or lane;
these three read exactly the matching rows, already in the list's order. Pairs with a
selective column (account, profile, issue) or with a time range (``since``/``until``:
the second column of each single-column index) were fast already.

Revision ID: 0016_failures_kind_pairs
Revises: 0015_flow_starts
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016_failures_kind_pairs"
down_revision: str | Sequence[str] | None = "0015_flow_starts"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("queue", "task", "lane")


def upgrade() -> None:
    for column in COLUMNS:
        op.create_index(
            f"ix_jobsys_failures_{column}_kind_occurred",
            "jobsys_failures",
            [
                column,
                "kind",
                sa.literal_column("occurred_at DESC"),
                sa.literal_column("id DESC"),
            ],
            unique=False,
        )


def downgrade() -> None:
    for column in COLUMNS:
        op.drop_index(f"ix_jobsys_failures_{column}_kind_occurred", table_name="jobsys_failures")
