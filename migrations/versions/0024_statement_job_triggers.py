"""engine: Procrastinate's per-row job triggers as per-statement ones

Procrastinate records a job's status events and wakes its workers with row-level
triggers on ``procrastinate_jobs``: on every insert one ``deferred`` event and two
``pg_notify`` calls, and on every status change one event, each through its own
PL/pgSQL call and INSERT. Measured on PostgreSQL 15 (default settings):

- 10,000 jobs deferred in one call: 590-627 ms, of which the two insert triggers are
  half (308-333 ms with the per-statement ones below);
- 5,000 jobs set ``doing`` in one UPDATE: the status trigger 155 ms, per statement
  52 ms; a lane's claim of 10 jobs spent 0.29 of its 0.72 ms in it, and its batched
  acknowledgement as much again.

Here they are replaced by two statement-level triggers with transition tables that do
the same set-based: ``jobsys_job_events_insert_v1`` writes the ``deferred`` events of
the inserted ``todo`` jobs and sends, per queue that got jobs, the same
``job_inserted`` payload on ``procrastinate_queue_v1#<queue>`` and
``procrastinate_any_queue_v1`` (with the lowest new job id of that queue: Procrastinate's
listeners and jobsys's only read the type, a notification wakes a worker, it does not
hand it a job); ``jobsys_job_events_update_v1`` writes, for every row whose status
changed, the event Procrastinate's CASE gives for that transition (none where it gives
none). Procrastinate's functions stay (unused); the abort, scheduled and delete
triggers are untouched. ``tests/integration/test_job_triggers.py`` holds the events and
notifications against Procrastinate's rules, transition by transition.

Revision ID: 0024_statement_job_triggers
Revises: 0023_search_text_inlined
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0024_statement_job_triggers"
down_revision: str | Sequence[str] | None = "0023_search_text_inlined"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INSERT_FUNCTION = r"""
CREATE OR REPLACE FUNCTION jobsys_job_events_insert_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO procrastinate_events (job_id, type)
    SELECT n.id, 'deferred'::procrastinate_job_event_type
      FROM new_jobs n
     WHERE n.status = 'todo'
     ORDER BY n.id;
    PERFORM pg_notify(channel.name,
                      json_build_object('type', 'job_inserted', 'job_id', q.id)::text)
       FROM (SELECT n.queue_name, min(n.id) AS id
               FROM new_jobs n
              WHERE n.status = 'todo'
              GROUP BY n.queue_name) q,
            LATERAL (VALUES ('procrastinate_queue_v1#' || q.queue_name),
                            ('procrastinate_any_queue_v1')) AS channel(name);
    RETURN NULL;
END
$$
"""

# Procrastinate 3.10's procrastinate_trigger_function_status_events_update_v1, per row.
UPDATE_FUNCTION = r"""
CREATE OR REPLACE FUNCTION jobsys_job_events_update_v1() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO procrastinate_events (job_id, type)
    SELECT t.id, t.event_type
      FROM (SELECT n.id,
                   CASE
                       WHEN o.status = 'todo' AND n.status = 'doing'
                           THEN 'started'::procrastinate_job_event_type
                       WHEN o.status = 'doing' AND n.status = 'todo'
                           THEN 'deferred_for_retry'::procrastinate_job_event_type
                       WHEN o.status = 'doing' AND n.status = 'failed'
                           THEN 'failed'::procrastinate_job_event_type
                       WHEN o.status = 'doing' AND n.status = 'succeeded'
                           THEN 'succeeded'::procrastinate_job_event_type
                       WHEN o.status = 'todo'
                            AND n.status IN ('cancelled', 'failed', 'succeeded')
                           THEN 'cancelled'::procrastinate_job_event_type
                       WHEN o.status = 'doing' AND n.status = 'aborted'
                           THEN 'aborted'::procrastinate_job_event_type
                       WHEN o.status = 'failed' AND n.status = 'todo'
                           THEN 'retried'::procrastinate_job_event_type
                   END AS event_type
              FROM new_jobs n
              JOIN old_jobs o ON o.id = n.id
             WHERE o.status IS DISTINCT FROM n.status) t
     WHERE t.event_type IS NOT NULL
     ORDER BY t.id;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.execute(INSERT_FUNCTION)
    op.execute(UPDATE_FUNCTION)
    op.execute(
        "DROP TRIGGER IF EXISTS procrastinate_trigger_status_events_insert_v1 ON procrastinate_jobs"
    )
    op.execute(
        "DROP TRIGGER IF EXISTS procrastinate_jobs_notify_queue_job_inserted_v1 "
        "ON procrastinate_jobs"
    )
    op.execute(
        "DROP TRIGGER IF EXISTS procrastinate_trigger_status_events_update_v1 ON procrastinate_jobs"
    )
    op.execute(
        "CREATE TRIGGER jobsys_job_events_insert_v1 AFTER INSERT ON procrastinate_jobs "
        "REFERENCING NEW TABLE AS new_jobs "
        "FOR EACH STATEMENT EXECUTE FUNCTION jobsys_job_events_insert_v1()"
    )
    op.execute(
        "CREATE TRIGGER jobsys_job_events_update_v1 AFTER UPDATE ON procrastinate_jobs "
        "REFERENCING OLD TABLE AS old_jobs NEW TABLE AS new_jobs "
        "FOR EACH STATEMENT EXECUTE FUNCTION jobsys_job_events_update_v1()"
    )


def downgrade() -> None:
    op.execute("DROP TRIGGER IF EXISTS jobsys_job_events_update_v1 ON procrastinate_jobs")
    op.execute("DROP TRIGGER IF EXISTS jobsys_job_events_insert_v1 ON procrastinate_jobs")
    # Procrastinate 3.10's own definitions (migrations/procrastinate/schema-3.10.0.sql).
    op.execute(
        "CREATE TRIGGER procrastinate_jobs_notify_queue_job_inserted_v1 "
        "AFTER INSERT ON procrastinate_jobs FOR EACH ROW "
        "WHEN ((new.status = 'todo'::procrastinate_job_status)) "
        "EXECUTE PROCEDURE procrastinate_notify_queue_job_inserted_v1()"
    )
    op.execute(
        "CREATE TRIGGER procrastinate_trigger_status_events_insert_v1 "
        "AFTER INSERT ON procrastinate_jobs FOR EACH ROW "
        "WHEN ((new.status = 'todo'::procrastinate_job_status)) "
        "EXECUTE PROCEDURE procrastinate_trigger_function_status_events_insert_v1()"
    )
    op.execute(
        "CREATE TRIGGER procrastinate_trigger_status_events_update_v1 "
        "AFTER UPDATE OF status ON procrastinate_jobs FOR EACH ROW "
        "EXECUTE PROCEDURE procrastinate_trigger_function_status_events_update_v1()"
    )
    op.execute("DROP FUNCTION IF EXISTS jobsys_job_events_update_v1()")
    op.execute("DROP FUNCTION IF EXISTS jobsys_job_events_insert_v1()")
