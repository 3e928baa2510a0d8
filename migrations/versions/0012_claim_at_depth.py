"""lanes: a claim whose cost does not grow with the backlog

Changes on Procrastinate's job table (the drift check ignores ``procrastinate_*``
objects, so they are not in the models):

- an index of waiting jobs by queue, priority and id: the claim
  (``jobsys.lanes.store.CLAIM_JOBS``) walks each of a lane's queues in fetch order
  through it and stops after the jobs it takes;
- an index of waiting and running jobs by ``lock``: the claim's lock rule looks up the
  other jobs of a candidate's lock by it instead of walking every waiting row; jobs
  without a lock are not in it;
- autovacuum settings for a queue table: every job leaves two or three dead row
  versions behind (todo -> doing -> done), and the default thresholds (20% of the
  table) let hundreds of thousands pile up and the planner's statistics go stale
  between passes on a large table of finished jobs. Vacuum after 1% + 1,000 dead
  rows, analyze after 2% + 1,000 changed rows, without the cost delay. These take
  effect only where autovacuum is on; a server with ``autovacuum = off`` needs its own
  VACUUM ANALYZE (README, "Performance").

Revision ID: 0012_claim_at_depth
Revises: 0011_queue_pauses
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012_claim_at_depth"
down_revision: str | Sequence[str] | None = "0011_queue_pauses"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The lock of a waiting or running job, else NULL. Indexed as an expression on
#: purpose: the claim's lookup names it, and no other index matches it, so the planner
#: takes this index even when the table's statistics are stale (with a plain partial
#: index on ``lock``, stale statistics made every partial index over waiting jobs look
#: like one row, and it walked one of those instead).
ACTIVE_LOCK = "CASE WHEN status IN ('todo', 'doing') THEN lock END"
#: The queue of a waiting job, else NULL: the claim walks each of its queues in
#: (priority, id) order through this index. An expression for the same reason: with a
#: plain ``status = 'todo'`` in the claim, stale statistics let the planner walk
#: Procrastinate's priority index instead, through every waiting job of every queue
#: (a lane whose queues are empty walked a whole backlog of another lane's queue).
WAITING_QUEUE = "CASE WHEN status = 'todo' THEN queue_name END"

AUTOVACUUM = {
    "autovacuum_vacuum_scale_factor": "0.01",
    "autovacuum_vacuum_threshold": "1000",
    "autovacuum_analyze_scale_factor": "0.02",
    "autovacuum_analyze_threshold": "1000",
    "autovacuum_vacuum_cost_delay": "0",
}


def upgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_jobs_active_lock "
        f"ON procrastinate_jobs (({ACTIVE_LOCK})) WHERE lock IS NOT NULL"
    )
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_jobs_waiting_by_queue "
        f"ON procrastinate_jobs (({WAITING_QUEUE}), priority DESC, id) "
        f"WHERE ({WAITING_QUEUE}) IS NOT NULL"
    )
    settings = ", ".join(f"{key} = {value}" for key, value in AUTOVACUUM.items())
    op.execute(f"ALTER TABLE procrastinate_jobs SET ({settings})")


def downgrade() -> None:
    op.execute(f"ALTER TABLE procrastinate_jobs RESET ({', '.join(AUTOVACUUM)})")
    op.execute("DROP INDEX IF EXISTS ix_jobsys_jobs_waiting_by_queue")
    op.execute("DROP INDEX IF EXISTS ix_jobsys_jobs_active_lock")
