"""engine: new jobs through one PL/pgSQL function, ``jobsys_defer_jobs_v1``

A defer was Procrastinate's ``procrastinate_defer_jobs_v1`` fed one composite value
per job (built from one array per column), with the ``jobs_changed`` NOTIFY around
it, sent as a statement the server parsed and planned on every call: jobsys never
prepares statements on the client (PgBouncer in transaction mode). As a PL/pgSQL
function (like ``jobsys_claim_limited_v1``, 0022) its statements' plans are cached in
the server session and PgBouncer sees a plain function call. Measured on PostgreSQL 15
(a throwaway default-settings cluster, 2-core machine under other work): one job sent
on one open connection, 40-60 interleaved rounds of 100, median ratio of the rate to
PgQueuer's ``enqueue`` (asyncpg) in the same rounds: 0.83, 0.87 before, 0.87, 0.92
with this function; ``defer_many`` of 10,000 (``python -m bench producers``, runs
alternating with the code before): 27,758 and 32,476 jobs/s before, 54,751 and 51,768
after (on the machine's server: 33,247 and 41,565 before, 52,991 and 48,035 after).

The jobs of one call share everything but their arguments (a ``defer``, a
``defer_many``): the function takes the columns once and the arguments as one JSON
array, one object per job, so the client sends no array per column. It inserts the
rows into ``procrastinate_jobs`` as Procrastinate's function does (same columns, same
triggers: 0024's events and wake-ups), returns their ids in the order given and, when
``_channel`` is set, sends the announcement ``{"topic": _topic, "deferred": n, "ids":
<the first ten ids>}`` on it, as the statement it replaces did. A queueing-lock
conflict raises the same unique violation (``procrastinate_jobs_queueing_lock_idx_v1``)
and inserts nothing.

Revision ID: 0025_defer_function
Revises: 0024_statement_job_triggers
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0025_defer_function"
down_revision: str | Sequence[str] | None = "0024_statement_job_triggers"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEFER_JOBS = r"""
CREATE OR REPLACE FUNCTION jobsys_defer_jobs_v1(
    _queue_name character varying,
    _task_name character varying,
    _priority integer,
    _lock text,
    _queueing_lock text,
    _args jsonb,
    _scheduled_at timestamp with time zone,
    _channel text,
    _topic text
) RETURNS bigint[]
LANGUAGE plpgsql AS $$
DECLARE
    _ids bigint[];
    _id bigint;
BEGIN
    IF jsonb_array_length(_args) = 1 THEN
        INSERT INTO procrastinate_jobs
               (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
        VALUES (_queue_name, _task_name, _priority, _lock, _queueing_lock, _args -> 0,
                _scheduled_at)
        RETURNING id INTO _id;
        _ids := ARRAY[_id];
    ELSE
        WITH inserted AS (
            INSERT INTO procrastinate_jobs
                   (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
            SELECT _queue_name, _task_name, _priority, _lock, _queueing_lock, a.value,
                   _scheduled_at
              FROM jsonb_array_elements(_args) WITH ORDINALITY AS a(value, n)
             ORDER BY a.n
            RETURNING id
        )
        SELECT coalesce(array_agg(id ORDER BY id), '{}') INTO _ids FROM inserted;
    END IF;
    IF _channel IS NOT NULL THEN
        PERFORM pg_notify(
            _channel,
            jsonb_build_object(
                'topic', _topic, 'deferred', cardinality(_ids), 'ids', _ids[1:10]
            )::text
        );
    END IF;
    RETURN _ids;
END
$$
"""


def upgrade() -> None:
    op.execute(DEFER_JOBS)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION IF EXISTS jobsys_defer_jobs_v1(varchar, varchar, integer, text, text, "
        "jsonb, timestamptz, text, text)"
    )
