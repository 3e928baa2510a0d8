"""failures: extended statistics on (queue, kind), (lane, kind) and (task, kind)

Every queue (lane, task) fails in one or two kinds, so the planner's assumption that
a filter's columns are independent is far off for a pair: ``--kind transient
--queue ai_face_queue`` matches no row, yet it estimated 30,000 and counted the
list's total (``LIMIT 1001`` with no order) with a sequential scan of the whole
table, 160 ms at 1,000,000 failures, instead of reading 3 pages of 0016's
``(queue, kind, occurred_at)`` index. Multivariate MCV lists and functional
dependencies on the pairs give it the real frequencies (measured: 0.07 ms). The
table is analysed here so the statistics exist at once (autovacuum may be off).

Revision ID: 0020_failures_pair_statistics
Revises: 0019_outage_replays
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0020_failures_pair_statistics"
down_revision: str | Sequence[str] | None = "0019_outage_replays"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PAIRS = ("queue", "lane", "task")


def upgrade() -> None:
    for column in PAIRS:
        op.execute(
            f"CREATE STATISTICS IF NOT EXISTS st_jobsys_failures_{column}_kind "
            f"(mcv, dependencies) ON {column}, kind FROM jobsys_failures"
        )
    op.execute("ANALYZE jobsys_failures")


def downgrade() -> None:
    for column in PAIRS:
        op.execute(f"DROP STATISTICS IF EXISTS st_jobsys_failures_{column}_kind")
