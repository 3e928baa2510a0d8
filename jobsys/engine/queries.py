"""Every SQL statement of jobsys that names a Procrastinate object, by name.

Procrastinate's own ``sql/queries.sql`` is the model: one statement per name, with a
comment saying what it is for, read whole in one file. Procrastinate's tables
(``procrastinate_jobs``, ``procrastinate_events``, ``procrastinate_workers``), its
functions (``procrastinate_defer_jobs_v1``, ``procrastinate_retry_job_v2``, ...) and
its channels are named here and in the rest of ``jobsys.engine`` only; every other
module runs these statements by name, through :mod:`jobsys.engine.manager` or its own
store module. The reaper's statements are in :mod:`jobsys.engine.dead_workers`, beside
the operations that run them. The schema these rely on is pinned in :mod:`jobsys.engine.schema`, and
``tests/integration/test_engine_schema_contract.py`` checks every function signature
used here.

Statements join jobsys's own tables where a read needs both (failures, issues,
pipeline steps): the join is in the database, the statement is here.
"""

from __future__ import annotations

import functools

from jobsys.db.query import like_contains

# --- Claiming jobs (the lane worker) --------------------------------------------------

#: A queue pause in force (``jobsys_queue_pauses``, owned by ``jobsys.flow``).
PAUSE_ACTIVE = "(pause.until IS NULL OR pause.until > now())"

#: What the claim adds to its candidate rule: no job of a paused queue is taken, by
#: a worker that heard of the pause or not. ``jobs`` is the claim's alias of
#: ``procrastinate_jobs``; one primary-key probe per candidate.
NOT_PAUSED = f"""NOT EXISTS (
           SELECT 1 FROM jobsys_queue_pauses AS pause
            WHERE pause.queue = jobs.queue_name AND {PAUSE_ACTIVE}
       )"""

#: What a waiting job waits for besides a pause: its schedule, a running holder of its
#: lock, and how busy its lane's queues are.
WAIT_FACTS = """
SELECT %(scheduled_at)s::timestamptz > now() AS scheduled_later,
       (SELECT id FROM procrastinate_jobs
         WHERE %(lock)s::text IS NOT NULL AND lock = %(lock)s AND status = 'doing'
         LIMIT 1) AS lock_holder,
       (SELECT count(*) FROM procrastinate_jobs
         WHERE status = 'doing' AND queue_name = ANY(%(lane_queues)s::text[])) AS lane_running,
       (SELECT count(*) FROM jobsys_worker_processes
         WHERE status = 'running' AND %(lane)s = ANY(lanes)
           AND last_heartbeat > now() - make_interval(secs => %(dead_after)s)) AS lane_processes
"""

# Procrastinate's ``procrastinate_fetch_job_v2`` (schema pinned in
# jobsys.engine.schema) with ``LIMIT %(limit)s`` instead of ``LIMIT 1``: the
# same candidate rule, order and row locks, several jobs per round trip. The lock rule
# holds inside one batch too: of two waiting jobs sharing a lock, the later one sees the
# earlier as a waiting job ahead of it and is not a candidate. RETURNING has no order;
# the caller sorts. jobsys adds one rule: no job of a paused queue (flow.store.ACTIVE).
#
# Written for a cost that does not grow with the backlog (``make bench`` claim: one
# claim of 10 took 2.6 / 37 / 840 ms at 3,000 / 20,000 / 100,000 waiting with
# Procrastinate's text, under 1 ms at each with this one), whatever the table's
# statistics say (a queue table's are stale more often than not):
#
# - Each of the lane's queues is walked on its own, in (priority, id) order, through
#   ``ix_jobsys_jobs_waiting_by_queue``, and the first ``limit`` of each are merged: a
#   lane never steps over another lane's backlog. The index's key is an expression
#   (the queue of a waiting job) that only this query names, so the planner cannot
#   prefer an index that reads every waiting job and sorts them, as it did with stale
#   statistics.
# - The lock rule is ``lock IS NULL OR NOT EXISTS``: Procrastinate's ``NOT EXISTS
#   (... WHERE jobs.lock IS NOT NULL AND ...)`` became an anti join that walked every
#   waiting row once per candidate, lock or none. A job with a lock finds the others
#   of its lock through ``ix_jobsys_jobs_active_lock`` (again an expression only this
#   query names).
# - A paused queue is left out before its jobs are read (one probe per queue).
#
# - Due jobs are locked ``FOR NO KEY UPDATE SKIP LOCKED`` (the claim changes
#   ``status`` and ``worker_id``, never the key), not Procrastinate's ``FOR UPDATE``:
#   a row some other transaction holds ``FOR KEY SHARE`` (a foreign-key check of a row
#   that references the job; the search-index pass copying the job's text,
#   ``SEARCH_INDEX_BATCH``) is taken, not skipped. ``FOR UPDATE`` skipped such rows,
#   the claim found nothing and the lane slept until its next poll: the search pass
#   holding every waiting job of a queue for its batch stalled the lanes for a whole
#   ``poll_interval_seconds``. Claims, bulk changes and deletes, the reaper still
#   exclude each other (``FOR NO KEY UPDATE`` conflicts with itself and ``FOR UPDATE``).
#
# Indexes in migration 0012. Rows locked by a queue's walk but not kept by the merge
# are released when the statement ends (autocommit).
#: What a claim returns: the row Procrastinate's ``Job.from_row`` reads (its own
#: ``fetch_job`` query selects the same columns).
JOB_COLUMNS = """id, status, task_name, priority, lock, queueing_lock, args, scheduled_at,
       queue_name, attempts, worker_id"""

#: Procrastinate's candidate rule, part one: a waiting job of the queue ``lane_queue``
#: whose time has come (``jobs``: the statement's alias of ``procrastinate_jobs``; the
#: CASE is the key of ``ix_jobsys_jobs_waiting_by_queue``).
DUE = """(CASE WHEN jobs.status = 'todo' THEN jobs.queue_name END) = lane_queue.name
           AND (jobs.scheduled_at IS NULL OR jobs.scheduled_at <= now())"""
#: Part two: no job of its lock runs or waits ahead of it (``lock IS NULL OR NOT
#: EXISTS``, through ``ix_jobsys_jobs_active_lock``: see above). The claims' rule.
#: Migration 0022's ``jobsys_claim_limited_v1`` repeats it (and the walk's order, row
#: lock and pause probe): change both, ``tests/integration/test_claim_rule_agreement.py``.
DUE_AND_UNLOCKED = f"""{DUE}
           AND (
               jobs.lock IS NULL
               OR NOT EXISTS (
                   SELECT 1
                     FROM procrastinate_jobs AS other_jobs
                    WHERE other_jobs.lock IS NOT NULL
                      AND (CASE WHEN other_jobs.status IN ('todo', 'doing')
                                THEN other_jobs.lock END) = jobs.lock
                      AND (
                          other_jobs.status = 'doing'
                          OR other_jobs.priority > jobs.priority
                          OR (other_jobs.priority = jobs.priority AND other_jobs.id < jobs.id)
                      )
               )
           )"""

#: Procrastinate's order: priority, then id, across the lane's queues.
BY_PRIORITY = "per_queue.priority DESC, per_queue.id ASC"
#: ``order: strict`` / ``weights``: the queues in the order given, then as above.
BY_QUEUE_ORDER = "lane_queue.position, " + BY_PRIORITY


def _lane_walk(columns: str, *, order_by: str, limit: str, also: str = "") -> str:
    """The FROM of a claim: each of the lane's queues (``lane_queue``, unless paused)
    walked on its own in (priority, id) order, its first ``limit`` due jobs of
    ``columns`` locked (``per_queue``; ``also``: more conditions), merged by
    ``order_by``."""
    return f"""FROM unnest(%(queues)s::varchar[]) WITH ORDINALITY AS lane_queue(name, position)
     CROSS JOIN LATERAL (
        SELECT {columns}
          FROM procrastinate_jobs AS jobs
         WHERE {DUE_AND_UNLOCKED}{also}
         ORDER BY jobs.priority DESC, jobs.id ASC
         LIMIT {limit}
           FOR NO KEY UPDATE OF jobs SKIP LOCKED
     ) AS per_queue
     WHERE NOT EXISTS (
               SELECT 1 FROM jobsys_queue_pauses AS pause
                WHERE pause.queue = lane_queue.name AND {PAUSE_ACTIVE}
           )
     ORDER BY {order_by}
     LIMIT {limit}"""


def _claim_jobs(order_by: str) -> str:
    return f"""
WITH candidate AS (
    SELECT per_queue.id AS candidate_id
      {_lane_walk("jobs.id, jobs.priority", order_by=order_by, limit="%(limit)s")}
)
UPDATE procrastinate_jobs
   SET status = 'doing', worker_id = %(worker_id)s
  FROM candidate
 WHERE procrastinate_jobs.id = candidate.candidate_id
RETURNING {JOB_COLUMNS}
"""


CLAIM_JOBS = _claim_jobs(BY_PRIORITY)
#: The setting the lane's claim runs under (migration 0026's ``jobsys_claim_v1``
#: carries it; run this before CLAIM_JOBS in the same transaction wherever that text is
#: sent itself: bench, tests). On a job table that was never analyzed (a new database, or a
#: server with ``autovacuum = off``) the planner expects a handful of waiting jobs per
#: queue and reads *all* of a queue's waiting jobs through a bitmap scan of
#: ``ix_jobsys_jobs_waiting_by_queue`` to sort them (its cost estimate is a hair below
#: the ordered index scan's: 109 vs 114 at 10,000 waiting), so a claim of 10 read
#: 10,000 rows: 4 ms of the server's CPU per claim in a drain of 10,000, O(backlog).
#: Without bitmap scans the only plan left walks the index in order and stops at the
#: LIMIT. Transaction-scoped (``is_local``): safe behind a transaction-mode pooler.
#: ``set_config``, not ``SET LOCAL``: the pool's connections are autocommit and the
#: claim's transaction is the pipeline's implicit one, where ``SET LOCAL`` works but
#: raises "WARNING: SET LOCAL can only be used in transaction blocks", a line in the
#: server's log for every claim of every lane.
CLAIM_PLANNER = "SELECT set_config('enable_bitmapscan', 'off', true)"
#: The claim of a lane with ``order: strict`` or ``weights``: the first queue's due jobs
#: first (priority orders jobs within a queue). Each queue is walked on its own either
#: way, so it costs what CLAIM_JOBS costs.
CLAIM_JOBS_IN_ORDER = _claim_jobs(BY_QUEUE_ORDER)
#: The lane's claim (``manager.claim_jobs``): CLAIM_JOBS, or with ``in_order``
#: CLAIM_JOBS_IN_ORDER, as one statement: migration 0026's PL/pgSQL
#: ``jobsys_claim_v1`` runs that query word for word
#: (``tests/integration/test_claim_rule_agreement.py``) with CLAIM_PLANNER's setting as
#: the function's own (``SET enable_bitmapscan = off``), and the server session keeps
#: its plan (a generic one): the claim is not planned again on every call (0.3 ms of a
#: claim's 0.7 ms on the server), and a transaction-mode PgBouncer sees a plain call.
#: Since migration 0027 it also carries ``enable_seqscan = off``: the kept plan is made
#: at the session's first claim, and made on an empty, analyzed table it scanned the
#: whole table on every later claim. Text sent by itself (bench, tests) runs without it.
CLAIM = (
    "SELECT * FROM jobsys_claim_v1(%(queues)s::varchar[], %(worker_id)s::bigint, "
    "%(limit)s::integer, %(in_order)s::boolean)"
)

# --- Claiming under flow limits (jobsys.flow.limits, queues.yaml ``throttle``) --------
#
# A lane with limits claims in one round trip while no limit binds: CLAIM_LIMITED, a
# call of ``jobsys_claim_limited_v1`` (migration 0022: a PL/pgSQL function, so its
# plan is kept by the server session and PgBouncer sees a plain call). It takes one
# transaction-level advisory lock per limit of the lane, which serialises the claims
# under a limit across processes and hosts; its query, a statement after the lock with
# a snapshot of its own, sees every claim committed before: its reads of the ledger of
# starts (``jobsys_flow_starts``) are exact. It locks due jobs as CLAIM_JOBS does, each
# with the bucket of the limit it falls under (``kind:target:key``; NULL: none; a
# task's limit wins over its queue's), and takes those that fit their
# bucket's limits now. Jobs it leaves (a bucket at its limit) are counted in its summary
# row; the caller then claims the rest through the exact path, one transaction:
# LIMITED_CANDIDATES (passing over buckets the worker knows are full, so a key at its
# limit does not hide the keys behind it), LOCK_BUCKETS (the limits shared, each bucket
# exclusive: exact claims on other keys do not wait for each other), BUCKET_STATE in a
# statement after the lock (it sees every claim committed before), the choice in Python
# (jobsys.flow.limits.decide: a rated job may be taken shortly before its window has
# room), TAKE_JOBS and RECORD_STARTS.


def _limit_case(kinds: tuple[str, ...], then: str, row: str) -> str:
    whens = " ".join(
        f"WHEN {row}.{'task_name' if kind == 'task' else 'queue_name'} = %(limit_target_{i})s "
        f"THEN {then.format(i=i, n=i + 1, row=row)}"
        for i, kind in enumerate(kinds)
    )
    return f"(CASE {whens} END)"


def _bucket(kinds: tuple[str, ...], row: str) -> str:
    return _limit_case(
        kinds, "%(limit_prefix_{i})s || coalesce({row}.args ->> %(limit_key_{i})s::text, '')", row
    )


def _limited_walk(kinds: tuple[str, ...], *, in_order: bool, scan: str) -> str:
    """Due, unpaused jobs of the lane's queues with their bucket and limit number
    (1-based; NULL: none), each queue walked in index order as CLAIM_JOBS does, buckets
    in ``full`` passed over, at most ``scan`` of them, locked. The bucket is computed
    after the scan's LIMIT (only for the jobs it returns), and in the scan only when
    ``full`` is not empty: a queue's scan may read every due job of the queue."""
    order_by = BY_QUEUE_ORDER if in_order else BY_PRIORITY
    columns = "jobs.id, jobs.priority, jobs.queue_name, jobs.task_name, jobs.args"
    also = f"""
           AND (cardinality(%(full)s::text[]) = 0
                OR coalesce({_bucket(kinds, "jobs")} <> ALL(%(full)s::text[]), true))"""
    return f"""
SELECT per_queue.id, {_bucket(kinds, "per_queue")} AS bucket,
       {_limit_case(kinds, "{n}", "per_queue")} AS limit_no,
       row_number() OVER (ORDER BY {order_by}) AS rank
  {_lane_walk(columns, also=also, order_by=order_by, limit=scan)}
"""


@functools.cache
def limited_candidates(kinds: tuple[str, ...], *, in_order: bool) -> str:
    """LIMITED_CANDIDATES for limits of these kinds (``task`` ones first: they win),
    parameters ``limit_target_N``, ``limit_prefix_N``, ``limit_key_N`` each. The bucket
    is a plain CASE over the row, so each queue is still walked in index order."""
    return _limited_walk(kinds, in_order=in_order, scan="%(scan)s")


#: The one-round-trip claim (see above): ``jobsys_claim_limited_v1``, migration 0022, one
#: statement whose plan the server keeps per session. Parameters: ``queues``,
#: ``worker_id``, ``limit``, ``in_order``, ``pad`` (seconds a rated job's start is recorded
#: ahead until it records its real start) and the lane's limits
#: (jobsys.flow.limits.LanePolicy.params). Returns the jobs taken (with ``bucket``,
#: ``rated`` and ``rank``) and one summary row (``id`` NULL) whose ``held`` counts the
#: candidates left to the exact path.
CLAIM_LIMITED = """
SELECT * FROM jobsys_claim_limited_v1(
    %(queues)s::varchar[], %(worker_id)s, %(limit)s, %(in_order)s, %(prefixes)s::text[],
    %(limit_kinds)s::text[], %(limit_targets)s::text[], %(limit_prefixes)s::text[],
    %(limit_keys)s::text[], %(concurrency)s::int[], %(rate_count)s::int[],
    %(span)s::float8[], %(pad)s)
"""

#: The exact claim's locks: its limits shared (it excludes the one-round-trip claim, not
#: other exact claims), then each bucket it may take from (sorted), until commit.
LOCK_BUCKETS = """
SELECT (SELECT count(pg_advisory_xact_lock_shared(hashtext('jobsys_flow'), hashtext(l.prefix)))
          FROM unnest(%(prefixes)s::text[]) AS l(prefix)),
       (SELECT count(pg_advisory_xact_lock(hashtext('jobsys_flow_bucket'), hashtext(b.bucket)))
          FROM unnest(%(buckets)s::text[]) AS b(bucket))
"""

#: Per bucket: its jobs running now (recorded starts whose job is ``doing``) and its
#: starts in the last ``span`` seconds, oldest first, in seconds from now (<= 0), and
#: that now (``read_at``).
BUCKET_STATE = """
SELECT b.bucket, clock_timestamp() AS read_at,
       (SELECT count(*) FROM jobsys_flow_starts AS s
          JOIN procrastinate_jobs AS j ON j.id = s.job_id
         WHERE s.bucket = b.bucket AND j.status = 'doing') AS running,
       (SELECT coalesce(array_agg(extract(epoch FROM s.started_at - clock_timestamp())::float8
                                  ORDER BY s.started_at), '{}')
          FROM jobsys_flow_starts AS s
         WHERE s.bucket = b.bucket
           AND s.started_at > clock_timestamp() - make_interval(secs => b.span)) AS recent
  FROM unnest(%(buckets)s::text[], %(spans)s::float8[]) AS b(bucket, span)
"""

#: The chosen jobs (locked by LIMITED_CANDIDATES) become ``doing``.
TAKE_JOBS = f"""
UPDATE procrastinate_jobs
   SET status = 'doing', worker_id = %(worker_id)s
 WHERE id = ANY(%(ids)s::bigint[])
RETURNING {JOB_COLUMNS}
"""

#: ``ahead``: seconds after ``base`` (the state's ``read_at``; now when NULL) the start
#: is recorded at until the job records its start (a rated job: its planned start plus a
#: pad, so a claim meanwhile never counts it earlier than it will run).
RECORD_STARTS = """
INSERT INTO jobsys_flow_starts (bucket, job_id, started_at)
SELECT s.bucket, s.job_id,
       coalesce(%(base)s::timestamptz, clock_timestamp()) + make_interval(secs => s.ahead)
  FROM unnest(%(buckets)s::text[], %(ids)s::bigint[], %(ahead)s::float8[])
       AS s(bucket, job_id, ahead)
"""

#: The next due waiting jobs of ``queues`` (at most ``scan`` per queue, in claim order),
#: grouped by queue, task and the value of argument ``key`` (NULL: not grouped by one):
#: which keys wait, for ``queues`` to say which of them a flow limit holds.
WAITING_KEYS = f"""
SELECT next_jobs.queue, next_jobs.task, next_jobs.key, count(*) AS waiting
  FROM unnest(%(queues)s::varchar[]) AS lane_queue(name)
 CROSS JOIN LATERAL (
    SELECT jobs.id, jobs.queue_name AS queue, jobs.task_name AS task,
           jobs.args ->> %(key)s::text AS key
      FROM procrastinate_jobs AS jobs
     WHERE {DUE}
     ORDER BY jobs.priority DESC, jobs.id ASC
     LIMIT %(scan)s
 ) AS next_jobs
 GROUP BY 1, 2, 3
 ORDER BY min(next_jobs.id)
 LIMIT %(limit)s
"""

#: Starts older than every window whose job no longer runs count for nothing.
PRUNE_STARTS = """
DELETE FROM jobsys_flow_starts AS s
 WHERE s.started_at < now() - make_interval(secs => %(keep_seconds)s)
   AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs AS j
                    WHERE j.id = s.job_id AND j.status = 'doing')
"""

# Jobs this worker claimed but is not running: a claim whose reply was lost (the
# connection dropped after the server committed it). Nobody else runs them while this
# worker's heartbeat lives, so the worker itself must take them up.
UNSTARTED_JOBS = f"""
SELECT {JOB_COLUMNS}
  FROM procrastinate_jobs
 WHERE status = 'doing' AND worker_id = %(worker_id)s
   AND NOT (id = ANY(%(running)s::bigint[]))
 ORDER BY priority DESC, id ASC
 LIMIT %(limit)s
"""

#: The job waiting under a queueing lock (Procrastinate's unique index allows one):
#: its id and task. Read after a defer was refused for the lock, to name that job.
WAITING_WITH_QUEUEING_LOCK = """
SELECT id, task_name FROM procrastinate_jobs
 WHERE queueing_lock = %(lock)s AND status = 'todo'
 LIMIT 1
"""

#: A retry of ``job_id`` collided with the job already waiting under the same queueing
#: lock: that sibling will do the work. The job's latest failure row (written before
#: the outcome) stops promising a retry and says why. Returns the sibling's id.
MERGE_RETRY_INTO_SIBLING = """
WITH sibling AS (
    SELECT s.id, s.queueing_lock
      FROM procrastinate_jobs j
      JOIN procrastinate_jobs s
        ON s.queueing_lock = j.queueing_lock AND s.status = 'todo' AND s.id <> j.id
     WHERE j.id = %(job_id)s
     LIMIT 1
), noted AS (
    UPDATE jobsys_failures f
       SET will_retry = false,
           retry_state = f.retry_state || jsonb_build_object(
               'outcome', 'merged_into_waiting_sibling',
               'sibling_job_id', (SELECT id FROM sibling),
               'queueing_lock', (SELECT queueing_lock FROM sibling))
     WHERE f.id = (SELECT max(id) FROM jobsys_failures WHERE job_id = %(job_id)s)
       AND EXISTS (SELECT 1 FROM sibling)
)
SELECT id FROM sibling
"""

#: New jobs through Procrastinate's ``procrastinate_defer_jobs_v1`` (its triggers and
#: NOTIFYs to workers unchanged), one array per column (``unnest`` rebuilds the
#: composite values in the database; the ids come back in the order given), and when
#: ``channel`` is set the announcement of the insert in the same statement
#: (jobsys.engine.inserts.Announce): one round trip however many jobs.
_DEFER_ANNOUNCED = """
SELECT ids,
       CASE WHEN %(channel)s::text IS NOT NULL THEN pg_notify(
           %(channel)s::text,
           jsonb_build_object(
               'topic', %(topic)s::text, 'deferred', cardinality(ids), 'ids', ids[1:10]
           )::text
       ) END AS announced
  FROM procrastinate_defer_jobs_v1("""

DEFER_JOBS = (
    _DEFER_ANNOUNCED
    + """ARRAY(
         SELECT ROW(j.queue_name, j.task_name, j.priority, j.lock, j.queueing_lock,
                    j.args::jsonb, j.scheduled_at)::procrastinate_job_to_defer_v1
           FROM unnest(%(queues)s::text[], %(tasks)s::text[], %(priorities)s::int[],
                       %(locks)s::text[], %(queueing_locks)s::text[], %(args)s::text[],
                       %(scheduled)s::timestamptz[])
                WITH ORDINALITY AS j(queue_name, task_name, priority, lock, queueing_lock,
                                     args, scheduled_at, n)
          ORDER BY j.n
       )) AS ids
"""
)

#: New jobs that share everything but their arguments (a ``defer``, a ``defer_many``,
#: the same call made at once by several requests) through jobsys's PL/pgSQL
#: ``jobsys_defer_jobs_v1`` (migration 0025): the columns sent once, the arguments as
#: one JSON array (one object per job, in order), the announcement sent by the function
#: when ``channel`` is set. Its statements' plans are cached in the server session (a
#: statement sent as text is parsed and planned on every call); the rows, triggers and
#: queueing-lock violation are those of :data:`DEFER_JOBS`. Returns ``ids``.
DEFER_UNIFORM = """
SELECT jobsys_defer_jobs_v1(
           %(queue)s::varchar, %(task)s::varchar, %(priority)s::int, %(lock)s::text,
           %(queueing_lock)s::text, %(args)s::jsonb, %(scheduled)s::timestamptz,
           %(channel)s::text, %(topic)s::text) AS ids
"""

#: One new job as :data:`DEFER_UNIFORM` writes it (the same parameters: ``args`` a JSON
#: array of one object), as one plain statement instead of a call of
#: ``jobsys_defer_jobs_v1``: the same row, triggers (0024's ``deferred`` event and
#: ``job_inserted`` wake-ups), queueing-lock violation and announcement
#: (``{"topic": ..., "deferred": 1, "ids": [id]}``; queued before the statement
#: triggers' wake-ups here, after them in the function: all are delivered at commit, on
#: other channels). Sent only where the connection prepares it (``JOBSYS_DB_PREPARE``,
#: ``jobsys.db.direct``): planned once, it executes in about 30 µs less than the
#: function's call, whose PL/pgSQL frame and nested executor it does not have (PostgreSQL
#: 15: 123-183 against 152-218 µs in the same runs, README "Performance"); sent as text
#: it would be parsed and planned each time, slower than the function. Returns ``ids``.
DEFER_ONE = """
WITH job AS (
    INSERT INTO procrastinate_jobs
           (queue_name, task_name, priority, lock, queueing_lock, args, scheduled_at)
    VALUES (%(queue)s::varchar, %(task)s::varchar, %(priority)s::int, %(lock)s::text,
            %(queueing_lock)s::text, %(args)s::jsonb -> 0, %(scheduled)s::timestamptz)
    RETURNING id
)
SELECT ARRAY[job.id] AS ids,
       CASE WHEN %(channel)s::text IS NOT NULL THEN pg_notify(
           %(channel)s::text,
           jsonb_build_object('topic', %(topic)s::text, 'deferred', 1, 'ids', ARRAY[job.id])::text
       ) END AS announced
  FROM job
"""

#: The outcomes of several jobs in one statement (one commit), set-based: the rules of
#: Procrastinate's ``procrastinate_finish_job_v1`` (only a ``todo``/``doing`` job is
#: finished; ``attempts`` + 1 when it was ``doing``; ``abort_requested`` cleared; the
#: row deleted instead when asked) applied to all rows at once. Calling that function
#: once per job cost three times as much server time (a PL/pgSQL call and a plan per
#: row: 5,000 outcomes 762 ms against 232 ms); the status events are written once
#: per statement (migration 0024). The rows are locked in id order first (one lock
#: order for every writer), each looked up by its id (a lateral probe of the primary
#: key): joined as two sets, stale statistics (the table analyzed while no job
#: waited, then a backlog) made the planner walk every waiting job of the partial
#: ``todo``/``doing`` index once per acknowledgement (85 ms for 10 of 40,000 waiting,
#: against 2 ms). Returns the ids written; a job missing from them was no
#: longer ``todo`` or ``doing`` (or the status was not an end status): the caller
#: writes it alone with FINISH_JOB, which raises Procrastinate's own error for it.
#: ``tests/integration/test_batched_acks.py`` holds both against each other.
FINISH_JOBS = """
WITH outcome AS (
    SELECT t.id, t.status::procrastinate_job_status AS status, t.del
      FROM unnest(%(ids)s::bigint[], %(statuses)s::text[], %(deletes)s::boolean[])
           AS t(id, status, del)
     WHERE t.status IN ('succeeded', 'failed', 'aborted')),
locked AS (
    SELECT j.id, o.status, o.del
      FROM (SELECT * FROM outcome ORDER BY id) o
     CROSS JOIN LATERAL (
            SELECT j.id
              FROM procrastinate_jobs j
             WHERE j.id = o.id AND j.status IN ('todo', 'doing')
               FOR NO KEY UPDATE OF j) j),
deleted AS (
    DELETE FROM procrastinate_jobs j
     USING locked l
     WHERE j.id = l.id AND l.del
    RETURNING j.id),
updated AS (
    UPDATE procrastinate_jobs j
       SET status = l.status,
           abort_requested = false,
           attempts = CASE j.status WHEN 'doing' THEN j.attempts + 1 ELSE j.attempts END
      FROM locked l
     WHERE j.id = l.id AND NOT l.del
    RETURNING j.id)
SELECT id FROM deleted
UNION ALL
SELECT id FROM updated
"""

#: One job's outcome through Procrastinate's own function (its checks and its error).
FINISH_JOB = """
SELECT procrastinate_finish_job_v1(%(id)s::bigint, %(status)s::procrastinate_job_status,
                                   %(delete)s::boolean)
"""

#: A ``doing`` job without a worker is one the reaper's dead-worker rules settle.
HAND_TO_REAPER = """
UPDATE procrastinate_jobs SET worker_id = NULL
 WHERE id = %(job_id)s AND status = 'doing'
   AND (%(worker_id)s::bigint IS NULL OR worker_id = %(worker_id)s::bigint)
RETURNING id
"""

#: Jobs ``doing`` for ``worker_id`` that it is not running (not in ``running``), started
#: over ``min_age`` seconds ago (so not a claim whose jobs are being started right now).
ORPHANED_JOBS = """
SELECT j.id
  FROM procrastinate_jobs j
 WHERE j.status = 'doing' AND j.worker_id = %(worker_id)s
   AND NOT (j.id = ANY(%(running)s::bigint[]))
   AND NOT EXISTS (SELECT 1 FROM procrastinate_events e
                    WHERE e.job_id = j.id AND e.type = 'started'
                      AND e.at > now() - make_interval(secs => %(min_age)s))
 ORDER BY j.id
 LIMIT 100
"""


# --- Worker heartbeats, drain, queue overview (lanes) ---------------------------------

# One round trip keeps the process row and every lane's procrastinate_workers row
# alive together, so the reaper never sees a live process with a stale lane. A running
# process whose lane rows are gone (a reaper took it for dead) is fenced: the heartbeat
# reports it and the process exits; the row says ``fenced`` from this same statement,
# since the process writes nothing more (``jobsys workers``).
HEARTBEAT = """
WITH process AS (
    UPDATE jobsys_worker_processes
       SET last_heartbeat = now(),
           status = CASE
               WHEN %(status)s = 'running'
                AND (SELECT count(*) FROM procrastinate_workers
                      WHERE id = ANY(%(worker_ids)s::bigint[]))
                    < cardinality(%(worker_ids)s::bigint[])
               THEN 'fenced'
               ELSE %(status)s
           END
     WHERE id = %(id)s
 RETURNING id
), workers AS (
    UPDATE procrastinate_workers
       SET last_heartbeat = now()
     WHERE id = ANY(%(worker_ids)s::bigint[])
 RETURNING id
)
SELECT (SELECT count(*) FROM process) AS processes, (SELECT count(*) FROM workers) AS workers
"""

# Drain: nothing due in the selected queues, nothing running on this process's lanes.
# Jobs of a paused queue do not count: the drain would wait for them forever. The drain
# only asks whether a due job waits (``waiting`` is 0 or 1): counting them all cost
# 74 ms a check at 20,000 waiting, on the CPU the drain's own jobs needed.
DRAIN_STATE = f"""
SELECT (
           SELECT count(*) FROM (
               SELECT 1
                 FROM procrastinate_jobs AS jobs
                WHERE status = 'todo' AND queue_name = ANY(%(queues)s::text[])
                  AND (scheduled_at IS NULL OR scheduled_at <= now())
                  AND {NOT_PAUSED}
                LIMIT 1
           ) AS due
       ) AS waiting,
       (
           SELECT count(*)
             FROM procrastinate_jobs
            WHERE status = 'doing' AND worker_id = ANY(%(worker_ids)s::bigint[])
       ) AS running
"""

WAITING_BY_QUEUE = """
SELECT queue_name AS queue, count(*) AS waiting
  FROM procrastinate_jobs
 WHERE queue_name = ANY(%(queues)s::text[])
   AND status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
 GROUP BY queue_name
"""

# The queue overview in one statement. The oldest wait: a job waits since its
# scheduled_at (schedule_in/at, retries) or, when it has none, since its 'deferred'
# event; among unscheduled jobs the lowest id is the oldest, so one event lookup per
# queue suffices (procrastinate_events is indexed by job_id).
QUEUE_OVERVIEW = """
WITH configured AS (
    SELECT q.queue, q.ord FROM unnest(%(queues)s::text[]) WITH ORDINALITY AS q(queue, ord)
), live AS (
    SELECT queue_name,
           count(*) FILTER (
               WHERE status = 'todo' AND (scheduled_at IS NULL OR scheduled_at <= now())
           ) AS waiting,
           count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now()) AS scheduled,
           count(*) FILTER (WHERE status = 'doing') AS running,
           min(scheduled_at) FILTER (
               WHERE status = 'todo' AND scheduled_at <= now()
           ) AS oldest_scheduled_at,
           min(id) FILTER (WHERE status = 'todo' AND scheduled_at IS NULL) AS oldest_unscheduled_id
      FROM procrastinate_jobs
     WHERE status IN ('todo', 'doing') AND queue_name = ANY(%(queues)s::text[])
     GROUP BY queue_name
)
SELECT c.queue,
       coalesce(l.waiting, 0) AS waiting,
       coalesce(l.scheduled, 0) AS scheduled,
       coalesce(l.running, 0) AS running,
       (SELECT count(*) FROM jobsys_failures f
         WHERE f.queue = c.queue AND f.occurred_at > now() - interval '1 hour') AS failed_last_hour,
       extract(epoch FROM now() - least(
           l.oldest_scheduled_at,
           (SELECT min(e.at) FROM procrastinate_events e
             WHERE e.job_id = l.oldest_unscheduled_id AND e.type = 'deferred')
       ))::float8 AS oldest_wait_seconds
  FROM configured c
  LEFT JOIN live l ON l.queue_name = c.queue
 ORDER BY c.ord
"""


# --- jobsys workers (lanes) ----------------------------------------------------------

#: The jobs running on these processes' lanes, with how long since their latest start.
RUNNING_ON_PROCESSES = """
SELECT p.id AS process_id, j.id, j.task_name AS task, j.queue_name AS queue,
       j.abort_requested,
       extract(epoch FROM now() - s.started_at)::float8 AS running_seconds
  FROM jobsys_worker_processes p
  JOIN procrastinate_jobs j
    ON j.worker_id = ANY(p.lane_worker_ids) AND j.status = 'doing'
  LEFT JOIN LATERAL (
       SELECT max(e.at) AS started_at FROM procrastinate_events e
        WHERE e.job_id = j.id AND e.type = 'started'
  ) s ON true
 WHERE p.id = ANY(%(ids)s::text[])
 ORDER BY p.id, j.id
"""


# --- Dashboard and metrics (live) -----------------------------------------------------

QUEUE_COUNTS = """
SELECT queue_name AS queue,
       count(*) FILTER (WHERE status = 'doing') AS running,
       count(*) FILTER (WHERE status = 'todo'
                          AND (scheduled_at IS NULL OR scheduled_at <= now())) AS waiting,
       count(*) FILTER (WHERE status = 'todo' AND scheduled_at > now()) AS scheduled
  FROM procrastinate_jobs
 WHERE status IN ('todo', 'doing')
 GROUP BY queue_name
"""

# The oldest due job of each queue (lowest id), and since when it has been waiting:
# its last (re)deferral or its scheduled time, whichever is later.
OLDEST_WAIT = """
SELECT q.queue,
       extract(epoch FROM now() - greatest(j.scheduled_at, e.at))::float8 AS oldest_wait_seconds
  FROM unnest(%(queues)s::text[]) AS q(queue)
  JOIN LATERAL (
        SELECT id, scheduled_at
          FROM procrastinate_jobs
         WHERE queue_name = q.queue AND status = 'todo'
           AND (scheduled_at IS NULL OR scheduled_at <= now())
         ORDER BY id
         LIMIT 1) j ON true
  LEFT JOIN LATERAL (
        SELECT max(at) AS at
          FROM procrastinate_events
         WHERE job_id = j.id AND type IN ('deferred', 'deferred_for_retry', 'retried')) e ON true
"""

THROUGHPUT = """
SELECT date_trunc('minute', at) AS minute,
       count(*) FILTER (WHERE type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE type = 'failed') AS failed,
       count(*) FILTER (WHERE type = 'deferred_for_retry') AS retried
  FROM procrastinate_events
 WHERE type IN ('succeeded', 'failed', 'deferred_for_retry')
   AND at >= date_trunc('minute', now()) - make_interval(mins => %(minutes)s - 1)
 GROUP BY 1
 ORDER BY 1
"""

# Pickup latency of the latest starts: from when the job became due to when it started.
PICKUP_LATENCY = """
SELECT count(*) AS samples,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY wait)::float8 AS p50_seconds,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY wait)::float8 AS p95_seconds,
       max(wait)::float8 AS max_seconds
  FROM (
        SELECT extract(epoch FROM s.at - greatest(
                   d.at, CASE WHEN j.scheduled_at <= s.at THEN j.scheduled_at END)) AS wait
          FROM (SELECT job_id, at
                  FROM procrastinate_events
                 WHERE type = 'started' AND at >= now() - make_interval(secs => %(seconds)s)
                 ORDER BY at DESC
                 LIMIT %(samples)s) s
          JOIN LATERAL (
                SELECT max(at) AS at
                  FROM procrastinate_events e
                 WHERE e.job_id = s.job_id
                   AND e.type IN ('deferred', 'deferred_for_retry', 'retried')
                   AND e.at <= s.at) d ON true
          LEFT JOIN procrastinate_jobs j ON j.id = s.job_id
       ) waits
 WHERE wait IS NOT NULL
"""

# The last full sliding minute (the header's rates), not the current calendar minute.
LAST_MINUTE = """
SELECT count(*) FILTER (WHERE type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE type = 'failed') AS failed,
       count(*) FILTER (WHERE type = 'deferred_for_retry') AS retried
  FROM procrastinate_events
 WHERE type IN ('succeeded', 'failed', 'deferred_for_retry')
   AND at >= now() - make_interval(secs => %(seconds)s)
"""

ENGINE_WORKERS = """
SELECT id, extract(epoch FROM now() - last_heartbeat)::float8 AS heartbeat_age_seconds
  FROM procrastinate_workers
 ORDER BY id
 LIMIT %(limit)s
"""

# --- Dashboard metrics headline (live services) ---------------------------------------

METRICS_HEADLINE = """
SELECT count(*) FILTER (WHERE status = 'todo'
                          AND (scheduled_at IS NULL OR scheduled_at <= now())) AS waiting,
       count(*) FILTER (WHERE status = 'doing') AS running
  FROM procrastinate_jobs
 WHERE status IN ('todo', 'doing')
"""

RECENT_OUTCOMES = """
SELECT count(*) FILTER (WHERE type = 'succeeded') AS succeeded,
       count(*) FILTER (WHERE type = 'failed') AS failed
  FROM procrastinate_events
 WHERE type IN ('succeeded', 'failed') AND at >= now() - interval '1 minute'
"""


# --- Jobs browser ---------------------------------------------------------------------

# The first job deferred at or after a time: a lower bound on the ids to scan for
# ``--since`` (the exact test is on the deferral time below).
FIRST_JOB_SINCE = """
SELECT job_id
  FROM procrastinate_events
 WHERE type = 'deferred' AND at >= %(since)s
 ORDER BY at
 LIMIT 1
"""

#: ``--arg-contains`` row by row: the text in the job's args' string and number values
#: (0010's ``jobsys_args_text``; the caller re-checks the REDACTED args in Python).
#: ``j.args::text`` (the JSON text, cheap: no function, no path walk) is tried first, and
#: the job is dropped when the text is not in it: a value's characters stand there as
#: they are, but for ``"``, ``\`` and control characters (JSON escapes them; a newline
#: is also what joins two values in ``jobsys_args_text``), so a text with none of those
#: found in a value is found in the JSON text too. A text with one of them skips the
#: shortcut. 10,000 jobs row by row: about 4x less time (the tail of the search).
ARG_CONTAINS_ROW = (
    f"((%(arg_contains)s::text ~ '[[:cntrl:]\"\\\\]' "
    f"OR j.args::text ILIKE {like_contains('arg_contains')})\n"
    f"   AND jobsys_args_text(j.args) ILIKE {like_contains('arg_contains')})"
)

#: ``--arg-contains`` through the index: the text in the job's searchable text
#: (``jobsys_job_search``, the redacted values copied by the search-index pass,
#: trigram-indexed: migration 0021). Only for jobs at or below the pass's cursor.
ARG_CONTAINS_INDEXED = f"""EXISTS (SELECT 1 FROM jobsys_job_search s
                WHERE s.job_id = j.id
                  AND s.args_text ILIKE {like_contains("arg_contains")})"""

_FILTER_BUT_CONTAINS = """
       (%(queues)s::text[] IS NULL OR j.queue_name = ANY(%(queues)s::text[]))
   AND (%(task)s::text IS NULL OR j.task_name = %(task)s::text)
   AND (%(account_docs)s::jsonb[] IS NULL OR j.args @> ANY(%(account_docs)s::jsonb[]))
   AND (%(arg_docs)s::jsonb[] IS NULL OR j.args @> ANY(%(arg_docs)s::jsonb[]))
"""

#: The filters ``jobs list`` and the bulk actions share, over ``procrastinate_jobs j``
#: (jobsys.jobs.browser.filter_params binds them; an unset one is NULL). The bulk
#: actions filter ``--arg-contains`` row by row (chunked by id anyway).
JOB_FILTER = f"""{_FILTER_BUT_CONTAINS}
   AND (%(arg_contains)s::text IS NULL OR {ARG_CONTAINS_ROW})
"""

_LIST_JOBS = """
SELECT j.id, j.task_name AS task, j.queue_name AS queue, j.status::text AS status,
       j.attempts, j.priority, j.scheduled_at, d.at AS created_at, j.args,
       j.args::text AS args_text, j.abort_requested, j.worker_id
  FROM procrastinate_jobs j
  LEFT JOIN LATERAL (
        SELECT min(at) AS at
          FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'deferred') d ON true
 WHERE {filter}
   AND (%(statuses)s::text[] IS NULL
        OR j.status = ANY(%(statuses)s::text[]::procrastinate_job_status[]))
   AND (%(min_id)s::bigint IS NULL OR j.id >= %(min_id)s::bigint)
   AND (%(max_id)s::bigint IS NULL OR j.id < %(max_id)s::bigint)
   AND (%(since)s::timestamptz IS NULL OR d.at >= %(since)s::timestamptz)
 ORDER BY j.id DESC
 LIMIT %(limit)s
"""

LIST_JOBS = _LIST_JOBS.replace("{filter}", JOB_FILTER)
#: ``jobs list --arg-contains`` over the jobs the search-index pass has copied
#: (``id <= search_cursor``): the EXISTS not under an OR, so the planner makes it a
#: semi-join and picks per text: a rare one from the trigram index (then sorted), a
#: common one by walking both primary keys newest first (under an OR it stays a
#: subplan hashing every match: 1.5 s for a common text at 1,000,000 jobs).
LIST_JOBS_CONTAINING = _LIST_JOBS.replace(
    "{filter}",
    f"{_FILTER_BUT_CONTAINS}   AND j.id <= %(search_cursor)s::bigint\n"
    f"   AND {ARG_CONTAINS_INDEXED}\n",
)
#: ... and over the newer jobs, not copied yet (``id > search_cursor``), row by row.
LIST_JOBS_CONTAINING_TAIL = _LIST_JOBS.replace(
    "{filter}",
    f"{_FILTER_BUT_CONTAINS}   AND j.id > %(search_cursor)s::bigint\n   AND {ARG_CONTAINS_ROW}\n",
)

#: The search-index pass's cursor: every job at or below it has its search row; and the
#: keys its side text redacts (a reader that shows some of them must not use it).
SEARCH_CURSOR = "SELECT indexed_up_to, keys FROM jobsys_job_search_state"

#: Where the pass may copy up to now: the pending stretch once no transaction that
#: was running when it was recorded is still running (one of them could still commit a
#: job inside it), else the cursor itself (``settled`` false: nothing to copy yet).
#: "Running" is both the snapshot's transactions and the writers recorded from
#: ``pg_locks`` (see SEARCH_PENDING): a writer still running holds its virtualxid lock.
SEARCH_SETTLED = """
SELECT indexed_up_to,
       pending_up_to,
       pending_up_to IS NULL
       OR (NOT EXISTS (SELECT 1
                         FROM pg_snapshot_xip(pending_snapshot::pg_snapshot) x
                        WHERE pg_xact_status(x) = 'in progress')
           AND NOT EXISTS (SELECT 1
                             FROM pg_locks l
                            WHERE l.locktype = 'virtualxid'
                              AND l.virtualxid = ANY(pending_writers))) AS settled
  FROM jobsys_job_search_state
"""

#: One batch of the pass: the jobs above the cursor up to ``upto``, oldest first, their
#: redacted text copied and the cursor moved past them, in one statement. The state
#: row is locked SKIP LOCKED (another worker's pass holds it: no row back, stop); the
#: jobs FOR KEY SHARE (a delete under way is waited for, then the job is skipped). A
#: key-share lock does not hide a job from a claim (``FOR NO KEY UPDATE``, see
#: CLAIM_JOBS) nor from a bulk cancel; a bulk delete's chunk is waited for, at most the
#: pass connection's ``lock_timeout`` (``jobsys.jobs.search_index``).
#:
#: ``LIMIT 1`` on the one state row: without it, and with no statistics on the table
#: (a table of one row is rarely analysed; never with autovacuum off), the planner
#: took it for ~570 rows, costed the batch in the hundreds of thousands and JIT-compiled
#: it on every call: ~0.5 s of compilation per batch, four fifths of the pass's time.
SEARCH_INDEX_BATCH = """
WITH st AS (
    SELECT indexed_up_to AS after, keys, jobsys_redacted_keys_pattern(keys) AS pattern
      FROM jobsys_job_search_state
     LIMIT 1
       FOR UPDATE SKIP LOCKED),
batch AS (
    SELECT j.id, j.args
      FROM procrastinate_jobs j, st
     WHERE j.id > st.after AND j.id <= %(upto)s::bigint
     ORDER BY j.id
     LIMIT %(batch)s
       FOR KEY SHARE OF j),
copied AS (
    INSERT INTO jobsys_job_search (job_id, args_text)
    SELECT b.id, jobsys_redacted_args_text(b.args, st.keys, st.pattern)
      FROM batch b, st
        ON CONFLICT (job_id) DO UPDATE SET args_text = EXCLUDED.args_text
           WHERE jobsys_job_search.args_text IS DISTINCT FROM EXCLUDED.args_text)
UPDATE jobsys_job_search_state s
   SET indexed_up_to = CASE WHEN (SELECT count(*) FROM batch) < %(batch)s
                            THEN greatest(s.indexed_up_to, %(upto)s::bigint)
                            ELSE (SELECT max(id) FROM batch) END
  FROM st
RETURNING s.indexed_up_to, (SELECT count(*) FROM batch) AS copied
"""

#: A worker's configured redacted keys (normalised) the state row lacks: added (never
#: removed), and the cursor set back to 0 so that every job's text is written again
#: with them (the search reads the jobs above the cursor row by row meanwhile).
SEARCH_KEYS = """
UPDATE jobsys_job_search_state
   SET keys = ARRAY(SELECT DISTINCT k FROM unnest(keys || %(keys)s::text[]) k ORDER BY k),
       indexed_up_to = 0, pending_up_to = NULL, pending_snapshot = NULL,
       pending_writers = NULL
 WHERE NOT keys @> %(keys)s::text[]
"""

#: The highest job id handed out so far (read BEFORE the snapshot below is taken).
SEARCH_HIGH_WATER = """
SELECT coalesce(pg_sequence_last_value(
           pg_get_serial_sequence('procrastinate_jobs', 'id')::regclass), 0) AS high
"""

#: The next stretch: up to ``high``, with the transactions running now (one of them may
#: hold an id at or below ``high`` whose job is not visible yet). The snapshot alone
#: misses one: a transaction gets its xid at its first write, and an INSERT draws its
#: id (``nextval``) before it writes the row, so a producer between the two when the
#: snapshot is taken is in no snapshot list, and its id would fall below the cursor
#: unindexed. It does hold the job table's write lock (taken before the id is drawn,
#: kept to its end), so the transactions holding it now (after ``high`` was read) are
#: recorded by their virtual ids, which every transaction has.
SEARCH_PENDING = """
UPDATE jobsys_job_search_state
   SET pending_up_to = %(high)s::bigint,
       pending_snapshot = pg_current_snapshot()::text,
       pending_writers = ARRAY(
           SELECT DISTINCT l.virtualtransaction
             FROM pg_locks l
            WHERE l.locktype = 'relation'
              AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND l.relation = 'procrastinate_jobs'::regclass
              AND l.mode = 'RowExclusiveLock')
"""

GET_JOB = """
SELECT j.id, j.task_name AS task, j.queue_name AS queue, j.status::text AS status,
       j.attempts, j.priority, j.lock, j.queueing_lock, j.scheduled_at, j.args,
       j.abort_requested, j.worker_id,
       (SELECT min(at) FROM procrastinate_events e
         WHERE e.job_id = j.id AND e.type = 'deferred') AS created_at
  FROM procrastinate_jobs j
 WHERE j.id = %(job_id)s
"""

JOB_EVENTS = """
SELECT type::text AS type, at AS occurred_at
  FROM procrastinate_events
 WHERE job_id = %(job_id)s
 ORDER BY at, id
"""


# --- Health checks (issues) -----------------------------------------------------------

# A waiting job is ready since its scheduled time, else since it was (re)queued.
QUEUE_WAITING = """
SELECT j.queue_name AS queue, count(*) AS waiting,
       EXTRACT(EPOCH FROM now() - min(COALESCE(j.scheduled_at, e.at, now()))) AS oldest_wait_seconds
  FROM procrastinate_jobs j
  LEFT JOIN LATERAL (
      SELECT max(at) AS at FROM procrastinate_events
       WHERE job_id = j.id AND type IN ('deferred', 'deferred_for_retry', 'retried')
  ) e ON TRUE
 WHERE j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now())
 GROUP BY j.queue_name
"""

# Attempts that ended in the window, per queue: failed ones (final or to be retried)
# against all finished ones.
QUEUE_OUTCOMES = """
SELECT j.queue_name AS queue,
       count(*) FILTER (WHERE e.type IN ('failed', 'deferred_for_retry')) AS failed,
       count(*) AS finished
  FROM procrastinate_events e
  JOIN procrastinate_jobs j ON j.id = e.job_id
 WHERE e.type IN ('failed', 'deferred_for_retry', 'succeeded')
   AND e.at >= now() - make_interval(secs => %(window)s)
 GROUP BY j.queue_name
"""

# Running jobs whose Procrastinate worker is gone or silent.
QUEUE_STALLED = """
SELECT j.queue_name AS queue, count(*) AS stalled
  FROM procrastinate_jobs j
  LEFT JOIN procrastinate_workers w ON w.id = j.worker_id
 WHERE j.status = 'doing'
   AND (w.id IS NULL OR w.last_heartbeat < now() - make_interval(secs => %(dead_after)s))
 GROUP BY j.queue_name
"""


# --- Failure reconciliation (failures) ------------------------------------------------

# Failed attempts Procrastinate recorded (``failed``/``deferred_for_retry`` events)
# with no failure row. An attempt's number is the count of the job's events that
# consumed an attempt up to it: the same ``job.attempts + 1`` capture writes.
UNRECORDED_ATTEMPTS = """
WITH recent AS (
    SELECT DISTINCT job_id FROM procrastinate_events
     WHERE id > %(after_id)s AND id <= %(upto)s
       AND type IN ('failed', 'deferred_for_retry')
       AND at < now() - make_interval(secs => %(grace)s)
), numbered AS (
    SELECT e.id AS event_id, e.job_id, e.type, e.at,
           count(*) FILTER (
               WHERE e.type IN ('deferred_for_retry', 'failed', 'succeeded', 'aborted', 'retried')
           ) OVER (PARTITION BY e.job_id ORDER BY e.id) AS attempt
      FROM procrastinate_events e
     WHERE e.job_id IN (SELECT job_id FROM recent)
)
SELECT n.event_id, n.job_id, n.type, n.at, n.attempt::int AS attempt,
       j.task_name, j.queue_name, j.args
  FROM numbered n
  JOIN procrastinate_jobs j ON j.id = n.job_id
 WHERE n.event_id > %(after_id)s AND n.event_id <= %(upto)s
   AND n.type IN ('failed', 'deferred_for_retry')
   AND n.at < now() - make_interval(secs => %(grace)s)
   AND NOT EXISTS (
       SELECT 1 FROM jobsys_failures f WHERE f.job_id = n.job_id AND f.attempt = n.attempt)
 ORDER BY n.event_id
 LIMIT %(limit)s
"""

# Where a reconciliation pass may start: events older than the lookback are not scanned.
EVENTS_START = """
SELECT COALESCE(min(id) - 1, (SELECT COALESCE(max(id), 0) FROM procrastinate_events))
       AS after_id
  FROM procrastinate_events
 WHERE at >= now() - make_interval(secs => %(lookback)s)
"""

EVENTS_SETTLED = """
SELECT COALESCE(max(id), %(after_id)s) AS upto FROM procrastinate_events
 WHERE id > %(after_id)s AND at < now() - make_interval(secs => %(grace)s)
"""


# --- Schedule, fan-out runs, retention (schedule) -------------------------------------

LAST_TICKS = """
SELECT DISTINCT ON (t.name)
       t.name, t.tick_at, t.status, t.job_id, j.status::text AS job_status,
       r.id AS run_id, r.status AS run_status
  FROM jobsys_schedule_ticks t
  LEFT JOIN procrastinate_jobs j ON j.id = t.job_id
  LEFT JOIN jobsys_fanout_runs r ON r.entry = t.name AND r.tick_at = t.tick_at
 WHERE t.name = ANY(%(names)s::text[]) AND t.status <> 'missed'
 ORDER BY t.name, t.tick_at DESC
"""

#: The entry's runs still going: enqueueing (``running``), waiting (``queued``), or the
#: latest ``finished`` one while one of its item jobs is still waiting or running (a
#: one-batch run finishes enqueueing within a second; its items take minutes). Only
#: the latest finished run is looked at: an id-range scan of its items, not of history.
#: A job of run ``r``'s items still waiting or running. (queue, status) pairs: the
#: planner then probes the index of active jobs instead of walking the whole id range of
#: a large finished run.
_ACTIVE_ITEM = """(j.queue_name, j.status) IN ((r.queue, 'todo'), (r.queue, 'doing'))
   AND j.id BETWEEN r.first_item_job_id AND r.last_item_job_id
   AND j.task_name = r.task"""

ACTIVE_RUNS = f"""
SELECT id, status, false AS items_pending FROM jobsys_fanout_runs
 WHERE entry = %(entry)s AND status IN ('running', 'queued')
UNION ALL
SELECT r.id, r.status, true FROM jobsys_fanout_runs r
 WHERE r.id = (SELECT max(id) FROM jobsys_fanout_runs
                WHERE entry = %(entry)s AND status = 'finished')
   AND EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE {_ACTIVE_ITEM})
 ORDER BY id
"""

#: How many of run ``id``'s item jobs are still waiting or running (``fanout show``).
PENDING_ITEMS = f"""
SELECT count(j.id) AS n
  FROM jobsys_fanout_runs r JOIN procrastinate_jobs j ON {_ACTIVE_ITEM}
 WHERE r.id = %(id)s
"""

#: Finished jobs whose last event is older than ``before``, oldest ids first; failed jobs
#: still referenced by a recent failure row are kept. Events go with them (the
#: statement trigger of migration 0029). SKIP LOCKED: never wait on a job someone is
#: touching.
DELETE_FINISHED_JOBS = """
WITH doomed AS (
    SELECT j.id FROM procrastinate_jobs j
     WHERE j.status = ANY(%(statuses)s::procrastinate_job_status[])
       -- the latest event, probed job by job on the job_id index. As NOT EXISTS the
       -- planner could make it an anti-join holding every recent event and comparing
       -- each job with all of them: a batch of 5,000 ran over 40 s at 1,000,000 jobs
       -- whose events' statistics were behind (0.2 s this way).
       AND COALESCE((SELECT max(e.at) FROM procrastinate_events e WHERE e.job_id = j.id),
                    '-infinity') < %(before)s
       AND NOT (j.status = 'failed' AND EXISTS (
               SELECT 1 FROM jobsys_failures f
                WHERE f.job_id = j.id AND f.occurred_at >= %(before)s))
     ORDER BY j.id
     LIMIT %(limit)s
       FOR UPDATE OF j SKIP LOCKED
)
DELETE FROM procrastinate_jobs j USING doomed WHERE j.id = doomed.id
"""


#: Failure rows older than ``before``, oldest first along ix_jobsys_failures_occurred
#: (retention; it reads Procrastinate's job table, so it lives here). A pending retry
#: settles on its failure row; a job still in the table, whatever its status, keeps its
#: failure history: ``jobs show`` reads it, ``jobsys retry`` reaches a failed job only
#: through it, and the automatic-retry cap sums the attempts it counts (a failed job
#: goes after ``failed_after_hours``, and its failures at the next run); and an issue
#: not resolved keeps its newest failure: an alert that
#: is still open must show the traceback that explains it, however old (a quiet issue
#: muted for months, say).
DELETE_OLD_FAILURES = """
WITH doomed AS (
    SELECT f.id FROM jobsys_failures f
     WHERE f.occurred_at < %(before)s
       AND f.retry_state->>'outcome' IS DISTINCT FROM 'pending'
       AND NOT EXISTS (SELECT 1 FROM procrastinate_jobs j WHERE j.id = f.job_id)
       AND NOT EXISTS (SELECT 1 FROM jobsys_issues i
                        WHERE i.id = f.issue_id AND i.status <> 'resolved'
                          AND f.id = (SELECT g.id FROM jobsys_failures g
                                       WHERE g.issue_id = i.id
                                       ORDER BY g.occurred_at DESC, g.id DESC LIMIT 1))
     ORDER BY f.occurred_at
     LIMIT %(limit)s
       FOR UPDATE OF f SKIP LOCKED
)
DELETE FROM jobsys_failures f USING doomed WHERE f.id = doomed.id
"""

# --- Retry (retry) --------------------------------------------------------------------

LOAD_JOBS = """
SELECT j.id, j.status::text AS status, j.queue_name, j.queueing_lock,
       (j.queueing_lock IS NOT NULL AND EXISTS (
            SELECT 1 FROM procrastinate_jobs o
            WHERE o.queueing_lock = j.queueing_lock AND o.status = 'todo' AND o.id <> j.id
       )) AS lock_conflict
FROM procrastinate_jobs j
WHERE j.id = ANY(%(ids)s)
ORDER BY j.id
"""

# Outcomes of pending retries whose job has finished since, or failed for good again
# (a newer final failure: failed_again, whatever its own retry did to the job since;
# ``jobsys.retry.rules.outcome_of``).
RECONCILE_OUTCOMES = """
WITH done AS (
    SELECT f.id,
           CASE WHEN n.failed_again THEN 'failed_again'
           ELSE CASE j.status::text
               WHEN 'succeeded' THEN 'succeeded'
               WHEN 'failed' THEN 'failed_again'
               WHEN 'cancelled' THEN 'cancelled'
               WHEN 'aborted' THEN 'cancelled'
               ELSE 'succeeded'
           END END AS outcome
    FROM jobsys_failures f
    LEFT JOIN procrastinate_jobs j ON j.id = f.job_id
    CROSS JOIN LATERAL (
        SELECT EXISTS (
            SELECT 1 FROM jobsys_failures g
            WHERE g.job_id = f.job_id AND g.id > f.id AND NOT g.will_retry
        ) AS failed_again
    ) n
    WHERE f.retry_state->>'outcome' = 'pending'
      AND (j.id IS NULL OR j.status NOT IN ('todo', 'doing') OR n.failed_again)
    ORDER BY f.id
    LIMIT %(limit)s
    FOR UPDATE OF f SKIP LOCKED
)
UPDATE jobsys_failures f
SET retry_state = f.retry_state
    || jsonb_build_object('outcome', done.outcome, 'outcome_at', to_jsonb(%(now)s::timestamptz))
FROM done WHERE f.id = done.id
RETURNING f.id
"""

# Automatic retry: final transient failures (the newest per job) whose job is still
# failed and not handed over to a pending retry. A failure refused earlier is looked
# at again only when that refusal can have changed: backoff when due, an outage once
# replayed, others after ``recheck_before``; cap and terminal pipeline never. The
# rules decide; this only keeps each batch to likely candidates.
AUTO_CANDIDATES = """
SELECT f.id
FROM jobsys_failures f
JOIN procrastinate_jobs j ON j.id = f.job_id AND j.status = 'failed'
LEFT JOIN jobsys_issues i ON i.id = f.issue_id
WHERE f.kind = 'transient' AND f.retryable AND NOT f.will_retry
  AND coalesce(f.retry_state->>'outcome', '') <> 'pending'
  AND NOT EXISTS (SELECT 1 FROM jobsys_failures n WHERE n.job_id = f.job_id AND n.id > f.id)
  AND CASE coalesce(f.retry_state->>'last_decision', '')
      WHEN '' THEN true
      WHEN 'skipped_auto_cap' THEN false
      WHEN 'skipped_terminal_pipeline' THEN false
      WHEN 'skipped_backoff' THEN (f.retry_state->>'auto_due_at')::timestamptz <= %(now)s
      -- the outage replay takes them once their issue resolves; leftovers come back here
      WHEN 'skipped_outage_open' THEN i.status = 'resolved' AND EXISTS (
           SELECT 1 FROM jobsys_outage_replays r
            WHERE r.issue_id = i.id AND r.replayed_at IS NOT NULL)
      ELSE f.retry_state->>'auto_checked_at' IS NULL
           OR (f.retry_state->>'auto_checked_at')::timestamptz < %(recheck_before)s
      END
ORDER BY f.occurred_at, f.id
LIMIT %(limit)s
"""

REPLAY_CANDIDATES = """
SELECT f.id
FROM jobsys_failures f
JOIN procrastinate_jobs j ON j.id = f.job_id AND j.status = 'failed'
WHERE f.issue_id = %(issue_id)s AND f.id > %(after)s
  AND NOT EXISTS (SELECT 1 FROM jobsys_failures n WHERE n.job_id = f.job_id AND n.id > f.id)
ORDER BY f.id
LIMIT %(limit)s
"""

LATEST_FAILURE_OF_JOB = """
SELECT
    (SELECT max(id) FROM jobsys_failures WHERE job_id = %(job_id)s) AS failure_id,
    EXISTS (SELECT 1 FROM procrastinate_jobs WHERE id = %(job_id)s) AS job_exists
"""


# --- Pipelines ------------------------------------------------------------------------

SHOW_STEPS = """
SELECT s.id, s.step, s.stage, s.task, s.queue, s.status, s.job_id, s.attempts,
       s.updated_at, s.finished_at,
       j.status::text AS job_status, j.attempts AS job_attempts, j.abort_requested,
       coalesce(f.failures, 0) AS failures, f.failure_ids, f.last_error
FROM jobsys_pipeline_steps s
LEFT JOIN procrastinate_jobs j ON j.id = s.job_id
LEFT JOIN LATERAL (
    SELECT count(*) AS failures, array_agg(x.id ORDER BY x.id) AS failure_ids,
           (array_agg(x.error_class || ': ' || x.message ORDER BY x.id DESC))[1] AS last_error
    FROM jobsys_failures x
    WHERE x.pipeline_step_id = s.id OR (s.job_id IS NOT NULL AND x.job_id = s.job_id)
) f ON true
WHERE s.pipeline_id = %(id)s
ORDER BY s.stage, s.id
"""


# --- Waking workers -------------------------------------------------------------------

#: One NOTIFY on one of Procrastinate's channels (``jobsys.engine.channels``).
NOTIFY = "SELECT pg_notify(%(channel)s, %(payload)s)"


# --- Inserting and retrying jobs (jobsys.engine.inserts) ------------------------------

#: The function behind Procrastinate's ``retry_job`` query (the contract test checks
#: they agree).
RETRY_FUNCTION = "procrastinate_retry_job_v2"

#: Failed jobs back to ``todo``, runnable at once by the database's clock.
RETRY_JOBS = f"""
SELECT {RETRY_FUNCTION}(id, now(), NULL, NULL, NULL)
FROM unnest(%(ids)s::bigint[]) AS id
"""

#: The next ids of a fan-out's source after the cursor. ``{id}``, ``{table}``,
#: ``{after}`` and ``{where}`` are composed by ``jobsys.engine.inserts`` (identifiers,
#: and the operator's filter validated at start); everything else is a bound parameter.
#: A batch of unique jobs reads them (the caller computes each item's key).
FANOUT_ITEMS = """
SELECT {id}::bigint AS item FROM {table}
 WHERE {after} AND ({where})
 ORDER BY {id}
 LIMIT %(limit)s
"""

#: One fan-out batch: read the items and defer one job per item, in one statement (the
#: ids never leave the server).
FANOUT_BATCH = f"""
WITH batch AS MATERIALIZED ({FANOUT_ITEMS}), deferred AS (
    SELECT procrastinate_defer_jobs_v1(ARRAY(
        SELECT ROW(%(queue)s, %(task)s, %(priority)s, NULL, NULL,
                   %(args)s::jsonb || jsonb_build_object(%(item_arg)s::text, item), NULL)
                   ::procrastinate_job_to_defer_v1
          FROM batch ORDER BY item
    )) AS ids
)
SELECT (SELECT count(*) FROM batch) AS items,
       (SELECT max(item) FROM batch) AS last_item,
       (SELECT coalesce(cardinality(ids), 0) FROM deferred) AS deferred,
       (SELECT min(id) FROM deferred, unnest(ids) id) AS first_job,
       (SELECT max(id) FROM deferred, unnest(ids) id) AS last_job
"""


# --- Issues (issues) ----------------------------------------------------------------

# Open job-failure issues whose every failure's job has since succeeded (Procrastinate
# retries a job under its own id, so the job's status tells): nobody needs to look at
# them. Resolved with reason "healed"; a new failure reopens them as a regression.
HEALED = """
i.kind = 'job_failure' AND i.status = 'open'
   AND EXISTS (SELECT 1 FROM jobsys_failures f WHERE f.issue_id = i.id)
   AND NOT EXISTS (
        SELECT 1 FROM jobsys_failures f
          LEFT JOIN procrastinate_jobs j ON j.id = f.job_id
         WHERE f.issue_id = i.id AND j.status IS DISTINCT FROM 'succeeded')
"""
RESOLVE_HEALED = f"""
UPDATE jobsys_issues i
   SET status = 'resolved', resolved_at = now(), resolved_by = 'auto',
       details = i.details || '{{"resolved_reason": "healed"}}'::jsonb
 WHERE {HEALED}
RETURNING id
"""
# The same search without the update (``make bench`` explains it).
FIND_HEALED = f"SELECT i.id FROM jobsys_issues i WHERE {HEALED}"


# --- Unique jobs (jobsys.engine.inserts, jobsys.jobs.unique) --------------------------

#: Namespace of the unique-key advisory locks (the first key of the pair).
UNIQUE_LOCK_NAMESPACE = 727_100_015

#: Held until the inserting transaction ends: one key's look-up and insert never
#: interleave across sessions (READ COMMITTED: the look-up after the lock sees every
#: job a previous holder committed). All the keys of an insert at once, in lock order
#: (two inserts sharing keys never deadlock); the subquery's order is the call order.
UNIQUE_LOCKS = f"""
SELECT count(pg_advisory_xact_lock({UNIQUE_LOCK_NAMESPACE}, h)) AS locked
  FROM (SELECT DISTINCT hashtext(k) AS h FROM unnest(%(keys)s::text[]) AS k ORDER BY 1) s
"""

#: Per key, the newest job that counts: in an active state at any age, or in a
#: finished state deferred within the period (keys with nothing that counts: no row).
UNIQUE_EXISTING = """
SELECT DISTINCT ON (u.key) u.key, u.job_id
  FROM jobsys_unique_jobs u
  JOIN procrastinate_jobs j ON j.id = u.job_id
 WHERE u.key = ANY(%(keys)s::text[])
   AND (
        ('waiting' = ANY(%(active)s::text[])
          AND j.status = 'todo' AND (j.scheduled_at IS NULL OR j.scheduled_at <= now()))
     OR ('scheduled' = ANY(%(active)s::text[])
          AND j.status = 'todo' AND j.scheduled_at > now())
     OR ('running' = ANY(%(active)s::text[]) AND j.status = 'doing')
     OR (j.status::text = ANY(%(finished)s::text[])
          AND u.created_at > now() - make_interval(secs => %(for_seconds)s))
   )
 ORDER BY u.key, u.job_id DESC
"""

UNIQUE_REMEMBER = """
INSERT INTO jobsys_unique_jobs (job_id, key)
SELECT * FROM unnest(%(job_ids)s::bigint[], %(keys)s::text[])
"""
