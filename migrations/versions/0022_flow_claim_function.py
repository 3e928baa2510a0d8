"""flow: the limited claim as a function, ``jobsys_claim_limited_v1``

The claim of a lane with flow limits (``jobsys.engine.manager.claim_limited``) while no
limit binds was two statements pipelined in one transaction (the limits' advisory
locks, then one statement that walks the due jobs, counts each key's recent starts and
running jobs, takes what fits and records the starts), planned again on every call:
jobsys never prepares statements on the client (PgBouncer in transaction mode), and
planning that statement cost about as much as running it. As a PL/pgSQL function it
is one statement; its query's plan is cached in the server session (generic, the same
for any parameters) and PgBouncer sees a plain function call.

The locks come first, in the order given (the caller sorts them: no deadlock with
another claim), and the query after them runs under a new snapshot (a VOLATILE
function's statements each take one), so it sees every claim committed before: its
reads of the ledger of starts are exact. Each job's bucket (``kind:target:key``) is
the first of the limits (task limits listed first: they win) whose target is the
job's task (a ``task`` limit) or queue (a ``queue`` limit).

``enable_bitmapscan = off``: a bucket's ledger rows are read through the
``(bucket, started_at)`` index by an index scan, which marks the index entries of
deleted (pruned) rows dead as it passes them; a bitmap scan never does, and read every
dead entry of the bucket again on every claim until a vacuum (6x slower with
autovacuum behind).

Revision ID: 0022_flow_claim_function
Revises: 0021_job_search_side_table
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0022_flow_claim_function"
down_revision: str | Sequence[str] | None = "0021_job_search_side_table"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SIGNATURE = (
    "jobsys_claim_limited_v1(character varying[], bigint, integer, boolean, text[], text[], "
    "text[], text[], text[], integer[], integer[], double precision[], double precision)"
)

CLAIM_LIMITED = r"""
CREATE OR REPLACE FUNCTION jobsys_claim_limited_v1(
    p_queues varchar[], p_worker_id bigint, p_limit integer, p_in_order boolean,
    p_lock_prefixes text[], p_kinds text[], p_targets text[], p_prefixes text[], p_keys text[],
    p_concurrency integer[], p_rate_count integer[], p_span float8[], p_pad float8)
RETURNS TABLE (id bigint, status procrastinate_job_status, task_name varchar, priority integer,
               lock text, queueing_lock text, args jsonb, scheduled_at timestamptz,
               queue_name varchar, attempts integer, worker_id bigint,
               bucket text, rated boolean, rank bigint, held bigint)
LANGUAGE plpgsql VOLATILE
SET plan_cache_mode = force_generic_plan
SET enable_bitmapscan = off
AS $$
#variable_conflict use_column
DECLARE
    l_prefix text;
BEGIN
    FOREACH l_prefix IN ARRAY p_lock_prefixes LOOP
        PERFORM pg_advisory_xact_lock(hashtext('jobsys_flow'), hashtext(l_prefix));
    END LOOP;
    RETURN QUERY
    WITH candidate AS MATERIALIZED (
        SELECT pq.id, lim.bucket, lim.limit_no,
               row_number() OVER (ORDER BY CASE WHEN p_in_order THEN lq.position ELSE 0 END,
                                           pq.priority DESC, pq.id) AS rank
          FROM unnest(p_queues) WITH ORDINALITY AS lq(name, position)
         CROSS JOIN LATERAL (
            SELECT jobs.id, jobs.priority, jobs.queue_name, jobs.task_name, jobs.args
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
          LEFT JOIN LATERAL (
            SELECT l.n AS limit_no, l.prefix || coalesce(pq.args ->> l.key, '') AS bucket
              FROM unnest(p_kinds, p_targets, p_prefixes, p_keys)
                   WITH ORDINALITY AS l(kind, target, prefix, key, n)
             WHERE l.target = CASE WHEN l.kind = 'task' THEN pq.task_name ELSE pq.queue_name END
             ORDER BY l.n
             LIMIT 1
         ) AS lim ON true
         WHERE NOT EXISTS (
                   SELECT 1 FROM jobsys_queue_pauses AS pause
                    WHERE pause.queue = lq.name AND (pause.until IS NULL OR pause.until > now())
               )
         ORDER BY CASE WHEN p_in_order THEN lq.position ELSE 0 END, pq.priority DESC, pq.id
         LIMIT p_limit
    ),
    state AS (
        SELECT b.bucket, b.concurrency, b.rate_count, ledger.recent,
               CASE WHEN b.concurrency IS NULL THEN 0
                    WHEN ledger.rows + p_limit <= b.concurrency THEN ledger.rows
                    ELSE (SELECT count(*) FROM jobsys_flow_starts AS s
                           WHERE s.bucket = b.bucket
                             AND (SELECT j.status FROM procrastinate_jobs AS j
                                   WHERE j.id = s.job_id) = 'doing')
               END AS running
          FROM (SELECT DISTINCT c.bucket, c.limit_no,
                       p_concurrency[c.limit_no] AS concurrency,
                       p_rate_count[c.limit_no] AS rate_count
                  FROM candidate AS c WHERE c.bucket IS NOT NULL) AS b
         CROSS JOIN LATERAL (
            SELECT count(*) AS rows,
                   count(*) FILTER (WHERE s.started_at > clock_timestamp()
                       - make_interval(secs => p_span[b.limit_no])) AS recent
              FROM jobsys_flow_starts AS s
             WHERE s.bucket = b.bucket
         ) AS ledger
    ),
    ranked AS (
        SELECT c.id, c.bucket, c.rank, state.rate_count IS NOT NULL AS rated,
               c.bucket IS NULL
               OR ((state.concurrency IS NULL
                        OR state.running + row_number() OVER per_bucket <= state.concurrency)
                   AND (state.rate_count IS NULL
                        OR state.recent + row_number() OVER per_bucket <= state.rate_count)
               ) AS fits
          FROM candidate AS c LEFT JOIN state ON state.bucket = c.bucket
        WINDOW per_bucket AS (PARTITION BY c.bucket ORDER BY c.rank)
    ),
    taken AS (
        UPDATE procrastinate_jobs
           SET status = 'doing', worker_id = p_worker_id
          FROM ranked
         WHERE procrastinate_jobs.id = ranked.id AND ranked.fits
        RETURNING procrastinate_jobs.id, procrastinate_jobs.status, procrastinate_jobs.task_name,
                  procrastinate_jobs.priority, procrastinate_jobs.lock,
                  procrastinate_jobs.queueing_lock, procrastinate_jobs.args,
                  procrastinate_jobs.scheduled_at, procrastinate_jobs.queue_name,
                  procrastinate_jobs.attempts, procrastinate_jobs.worker_id,
                  ranked.bucket, ranked.rated, ranked.rank
    ),
    recorded AS (
        INSERT INTO jobsys_flow_starts (bucket, job_id, started_at)
        SELECT taken.bucket, taken.id,
               clock_timestamp() + make_interval(secs => CASE WHEN taken.rated
                                                              THEN p_pad ELSE 0 END)
          FROM taken
         WHERE taken.bucket IS NOT NULL
    )
    SELECT taken.*, NULL::bigint FROM taken
    UNION ALL
    SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
           (SELECT count(*) FROM ranked WHERE NOT ranked.fits);
END
$$;
"""


def upgrade() -> None:
    op.execute(CLAIM_LIMITED)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION IF EXISTS {SIGNATURE}")
