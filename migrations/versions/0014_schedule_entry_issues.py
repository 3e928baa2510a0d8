"""issues: a schedule entry the scheduler had to set aside is an issue

A fan-out whose source table does not exist (yet) is set aside by the scheduler
(``jobsys.schedule.scheduler.Scheduler.check``) while the rest of the schedule runs;
it is reported as an open issue of kind ``schedule_entry`` (one per entry), resolved
automatically once the table exists.

Revision ID: 0014_schedule_entry_issues
Revises: 0013_unique_jobs
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014_schedule_entry_issues"
down_revision: str | Sequence[str] | None = "0013_unique_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD = "kind IN ('job_failure', 'queue_health', 'service_outage')"
NEW = "kind IN ('job_failure', 'queue_health', 'service_outage', 'schedule_entry')"


def upgrade() -> None:
    op.drop_constraint(op.f("ck_jobsys_issues_kind"), "jobsys_issues", type_="check")
    op.create_check_constraint(op.f("ck_jobsys_issues_kind"), "jobsys_issues", NEW)


def downgrade() -> None:
    op.execute("DELETE FROM jobsys_issues WHERE kind = 'schedule_entry'")
    op.drop_constraint(op.f("ck_jobsys_issues_kind"), "jobsys_issues", type_="check")
    op.create_check_constraint(op.f("ck_jobsys_issues_kind"), "jobsys_issues", OLD)
