"""engine: job events go with their jobs through a statement trigger, not a foreign key

Every ``procrastinate_events`` row was checked against ``procrastinate_jobs`` by the
foreign key ``procrastinate_events_job_id_fkey`` (``ON DELETE CASCADE``): a per-row
check that looks the job up in its primary key and locks its row ``FOR KEY SHARE``.
The job row is always one the same statement has just inserted or updated (events are
written only by the triggers on ``procrastinate_jobs``: jobsys's statement triggers of
migration 0024 and Procrastinate's scheduled and abort-requested ones), so the check
never finds anything missing, but its lock writes the job row again (its ``xmax``, and
a WAL record) for every event: a deferred job, a started one and a finished one, three
times per job.

The constraint is dropped. What it also did, removing a job's events when the job is
deleted, is done by ``jobsys_job_events_delete_v1``, an ``AFTER DELETE`` statement
trigger with a transition table: one ``DELETE`` of the events of all rows the
statement deleted, through the ``job_id`` index (the same index probe per job the
cascade made, in one statement). It covers every way a job is deleted: Procrastinate's
``procrastinate_finish_job_v1`` and ``procrastinate_cancel_job_v1`` with
``delete_job``, its ``delete_old_jobs``, jobsys's batched acknowledgement, retention
and ``jobs delete``. ``TRUNCATE procrastinate_jobs`` (which the foreign key refused
without ``CASCADE``) empties the events too (the trigger ``jobsys_job_events_truncate_v1``,
the same function).
``tests/integration/test_events_without_fk.py`` deletes jobs by each of these paths.

Downgrade deletes events of jobs that no longer exist (none, unless written by hand)
and restores the foreign key under its own name.

Revision ID: 0029_events_without_foreign_key
Revises: 0028_tick_already_queued
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0029_events_without_foreign_key"
down_revision: str | Sequence[str] | None = "0028_tick_already_queued"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Procrastinate's name for the constraint (PostgreSQL's default for its schema's
#: ``REFERENCES procrastinate_jobs ON DELETE CASCADE``).
FOREIGN_KEY = "procrastinate_events_job_id_fkey"

# One function for both triggers (``TG_OP``). ``= ANY(ARRAY(...))``: an index probe per
# deleted job whatever the number of rows; a join with the transition table could be
# planned as a scan of all events.
FUNCTION = r"""
CREATE OR REPLACE FUNCTION jobsys_job_events_delete_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        TRUNCATE procrastinate_events;
    ELSE
        DELETE FROM procrastinate_events
         WHERE job_id = ANY (ARRAY(SELECT o.id FROM old_jobs o));
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(FUNCTION)
    op.execute(
        "CREATE TRIGGER jobsys_job_events_delete_v1 AFTER DELETE ON procrastinate_jobs "
        "REFERENCING OLD TABLE AS old_jobs "
        "FOR EACH STATEMENT EXECUTE FUNCTION jobsys_job_events_delete_v1()"
    )
    op.execute(
        "CREATE TRIGGER jobsys_job_events_truncate_v1 AFTER TRUNCATE ON procrastinate_jobs "
        "FOR EACH STATEMENT EXECUTE FUNCTION jobsys_job_events_delete_v1()"
    )
    op.execute(f"ALTER TABLE procrastinate_events DROP CONSTRAINT {FOREIGN_KEY}")


def downgrade() -> None:
    op.execute(
        "DELETE FROM procrastinate_events e "
        "WHERE NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.id = e.job_id)"
    )
    # Procrastinate 3.10's own definition (migrations/procrastinate/schema-3.10.0.sql).
    op.execute(
        f"ALTER TABLE procrastinate_events ADD CONSTRAINT {FOREIGN_KEY} "
        "FOREIGN KEY (job_id) REFERENCES procrastinate_jobs(id) ON DELETE CASCADE"
    )
    op.execute("DROP TRIGGER IF EXISTS jobsys_job_events_truncate_v1 ON procrastinate_jobs")
    op.execute("DROP TRIGGER IF EXISTS jobsys_job_events_delete_v1 ON procrastinate_jobs")
    op.execute("DROP FUNCTION IF EXISTS jobsys_job_events_delete_v1()")
