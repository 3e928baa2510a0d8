"""schedule: a tick that linked a unique task's queued job says so

A scheduled tick of a task declared ``unique_for`` whose job still counts enqueues
nothing: it links the job already queued. Its tick row said ``enqueued`` all the same,
so ``schedule list`` and the web schedule page told an operator a job was enqueued
when none was. Such a tick is now recorded as ``already_queued``.

Revision ID: 0028_tick_already_queued
Revises: 0027_claim_functions_index_only
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0028_tick_already_queued"
down_revision: str | Sequence[str] | None = "0027_claim_functions_index_only"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CONSTRAINT = "ck_jobsys_schedule_ticks_status"


def _allow(statuses: str) -> None:
    op.drop_constraint(op.f(CONSTRAINT), "jobsys_schedule_ticks", type_="check")
    op.create_check_constraint(op.f(CONSTRAINT), "jobsys_schedule_ticks", f"status IN ({statuses})")


def upgrade() -> None:
    _allow("'enqueued', 'missed', 'manual', 'skipped', 'already_queued'")


def downgrade() -> None:
    # The older schema has no word for a linked tick: it called it enqueued.
    op.execute(
        "UPDATE jobsys_schedule_ticks SET status = 'enqueued' WHERE status = 'already_queued'"
    )
    _allow("'enqueued', 'missed', 'manual', 'skipped'")
