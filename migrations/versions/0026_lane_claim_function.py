"""lanes: the plain claim as a function, ``jobsys_claim_v1``

A lane without flow limits claimed its jobs with two statements pipelined in one
transaction (``set_config('enable_bitmapscan', 'off', true)``, then the claim), the
claim planned again on every call: jobsys never prepares statements on the client
(PgBouncer in transaction mode). Planning took about 0.3 ms of a claim's 0.7 ms on the
server, and the claim is on a lane's critical path (its slots wait for it). As a
PL/pgSQL function it is one statement; its plan is cached in the server session
(generic: the same for any parameters, ``plan_cache_mode = force_generic_plan``) and
PgBouncer sees a plain function call. Measured in isolation (20,000 waiting, claim of
10 then its acknowledgement, 5432): 1.53 ms -> 1.17 ms per claim round trip.

The query is ``jobsys.engine.queries.CLAIM_JOBS`` / ``CLAIM_JOBS_IN_ORDER`` word for
word (aliases shortened as in 0022's ``jobsys_claim_limited_v1``): each of the lane's
queues walked on its own in (priority, id) order, the lock rule, the pause probe;
``tests/integration/test_claim_rule_agreement.py`` holds both against each other.
``enable_bitmapscan = off`` as the lane's claim set it per transaction: on a job table
never analyzed the planner would read every waiting job of a queue through a bitmap
scan (``tests/integration/test_claim.py``).

Revision ID: 0026_lane_claim_function
Revises: 0025_defer_function
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0026_lane_claim_function"
down_revision: str | Sequence[str] | None = "0025_defer_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = "jobsys_claim_v1(character varying[], bigint, integer, boolean)"

CLAIM = r"""
CREATE OR REPLACE FUNCTION jobsys_claim_v1(
    p_queues varchar[], p_worker_id bigint, p_limit integer, p_in_order boolean)
RETURNS TABLE (id bigint, status procrastinate_job_status, task_name varchar, priority integer,
               lock text, queueing_lock text, args jsonb, scheduled_at timestamptz,
               queue_name varchar, attempts integer, worker_id bigint)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
BEGIN
    RETURN QUERY
    WITH candidate AS (
        SELECT pq.id AS candidate_id
          FROM unnest(p_queues) WITH ORDINALITY AS lq(name, position)
         CROSS JOIN LATERAL (
            SELECT jobs.id, jobs.priority
              FROM procrastinate_jobs AS jobs
             WHERE (CASE WHEN jobs.status = 'todo' THEN jobs.queue_name END) = lq.name
               AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())
               AND (
                   jobs.lock IS NULL
                   OR NOT EXISTS (
                       SELECT 1
                         FROM procrastinate_jobs AS oj
                        WHERE oj.lock IS NOT NULL
                          AND (CASE WHEN oj.status IN ('todo', 'doing')
                                    THEN oj.lock END) = jobs.lock
                          AND (
                              oj.status = 'doing'
                              OR oj.priority > jobs.priority
                              OR (oj.priority = jobs.priority AND oj.id < jobs.id)
                          )
                   )
               )
             ORDER BY jobs.priority DESC, jobs.id ASC
             LIMIT p_limit
               FOR NO KEY UPDATE OF jobs SKIP LOCKED
         ) AS pq
         WHERE NOT EXISTS (
                   SELECT 1 FROM jobsys_queue_pauses AS pause
                    WHERE pause.queue = lq.name AND (pause.until IS NULL OR pause.until > now())
               )
         ORDER BY CASE WHEN p_in_order THEN lq.position ELSE 0 END, pq.priority DESC, pq.id
         LIMIT p_limit
    ),
    taken AS (
        UPDATE procrastinate_jobs
           SET status = 'doing', worker_id = p_worker_id
          FROM candidate
         WHERE procrastinate_jobs.id = candidate.candidate_id
        RETURNING procrastinate_jobs.id, procrastinate_jobs.status, procrastinate_jobs.task_name,
                  procrastinate_jobs.priority, procrastinate_jobs.lock,
                  procrastinate_jobs.queueing_lock, procrastinate_jobs.args,
                  procrastinate_jobs.scheduled_at, procrastinate_jobs.queue_name,
                  procrastinate_jobs.attempts, procrastinate_jobs.worker_id
    )
    SELECT * FROM taken;
END
$$;
"""


def upgrade() -> None:
    op.execute(CLAIM)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
