"""SQL of grouping failures into issues: the issue a new failure opens, joins (its
service's open outage) or counts in, its affected account, and the live events, in the
statements the failure recorder (:mod:`jobsys.failures.recorder`) sends. The rest of
an issue's life (listing, resolving, muting, health issues) is ``jobsys.issues.store``,
which shares :data:`REOPEN`.
"""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Any

from jobsys.db.query import execute, fetch_one, one_round_trip

# A resolved issue that happens again (after it was resolved) reopens as a regression;
# an expired mute opens; an active mute stays muted but keeps counting.
REOPENING = "i.status = 'resolved' AND EXCLUDED.last_seen > COALESCE(i.resolved_at, '-infinity')"
# Except a queue_health issue resolved because its queue was paused (jobsys.issues.health):
# the pause acknowledged it, nothing fixed it, so its breach after the resume is the same
# problem back, not a regression.
PAUSED_REASON = "queue paused"
REGRESSING = f"{REOPENING} AND i.details->>'resolved_reason' IS DISTINCT FROM '{PAUSED_REASON}'"
# Why it resolved (``resolved_reason``) no longer holds once it reopens, nor who last
# reopened it by hand (``reopened_by``): this reopening is no one's.
DETAILS_ON_REOPEN = f"""CASE WHEN {REOPENING} THEN i.details - 'resolved_reason' - 'reopened_by'
    ELSE i.details END"""
REOPEN = f"""
    status = CASE
        WHEN {REOPENING} THEN 'open'
        WHEN i.status = 'muted' AND i.muted_until <= now() THEN 'open'
        ELSE i.status END,
    regression = i.regression OR ({REGRESSING}),
    muted_until = CASE WHEN i.status = 'muted' AND i.muted_until > now()
        THEN i.muted_until END,
    resolved_at = CASE WHEN i.status = 'resolved'
        AND EXCLUDED.last_seen <= COALESCE(i.resolved_at, '-infinity') THEN i.resolved_at END,
    resolved_by = CASE WHEN i.status = 'resolved'
        AND EXCLUDED.last_seen <= COALESCE(i.resolved_at, '-infinity') THEN i.resolved_by END
"""

_COUNT_IN_ISSUE = f"""
ON CONFLICT (fingerprint) DO UPDATE SET
    occurrences = i.occurrences + 1,
    first_seen = LEAST(i.first_seen, EXCLUDED.first_seen),
    last_seen = GREATEST(i.last_seen, EXCLUDED.last_seen),
    latest_failure_id = CASE WHEN EXCLUDED.last_seen >= i.last_seen
        THEN EXCLUDED.latest_failure_id ELSE i.latest_failure_id END,
    details = {DETAILS_ON_REOPEN},
    {REOPEN}
"""
_FAILURE_ISSUE_COLUMNS = """fingerprint, kind, title, status, occurrences, latest_failure_id,
    task, error_class, queue, service, first_seen, last_seen"""
# issue_task/issue_queue, not the failure's task/queue: the two share one parameter set
# (RECORD_WITH_ISSUE), and an authentication issue spans tasks and queues (NULL).
_FAILURE_ISSUE_VALUES = """%(fingerprint)s, 'job_failure', %(title)s, 'open', 1, {failure_id},
    %(issue_task)s, %(error_class)s, %(issue_queue)s, %(service)s, %(occurred_at)s,
    %(occurred_at)s"""
UPSERT_FAILURE_ISSUE = f"""
INSERT INTO jobsys_issues AS i ({_FAILURE_ISSUE_COLUMNS})
VALUES ({_FAILURE_ISSUE_VALUES.format(failure_id="%(failure_id)s")})
{_COUNT_IN_ISSUE}
RETURNING id
"""

# A failure joins its service's outage only while that outage is open (or muted).
_JOIN_OUTAGE_SET = """occurrences = occurrences + 1,
       last_seen = GREATEST(last_seen, %(occurred_at)s),
       latest_failure_id = CASE WHEN %(occurred_at)s >= last_seen
           THEN {failure_id} ELSE latest_failure_id END"""
_OPEN_OUTAGE = "fingerprint = {fingerprint} AND status IN ('open', 'muted')"
JOIN_OUTAGE = f"""
UPDATE jobsys_issues
   SET {_JOIN_OUTAGE_SET.format(failure_id="%(failure_id)s")}
 WHERE {_OPEN_OUTAGE.format(fingerprint="%(fingerprint)s")}
RETURNING id
"""

# Capture's path: a new failure and its issue in ONE statement, the rest (FINISH_RECORDED)
# in a second, sent together (:func:`record_with_issue`).
#
# The failure row is inserted with the issue it will most likely be counted in, read
# first: its service's open outage, else its fingerprint's issue. Setting issue_id by an
# UPDATE afterwards would write a second version of the row and of its eleven index
# entries. FINISH_RECORDED links it only when that guess was wrong (a new issue, or an
# outage that opened or closed in between).
#
# Order: the failure row, then ONE issue row (the open outage it joins, else its own,
# upserted), never both: ``own`` reads ``outage``, which reads ``f``. (A wrong guess
# leaves only the foreign key's KEY SHARE lock on the guessed row, which no issue write
# waits for: none changes an issue's id.) Nothing is counted
# when that attempt was already recorded (``f`` is empty). The ids are left in
# transaction-local settings for FINISH_RECORDED, which runs before any round trip could
# bring them back; both are always set ('' = nothing recorded), so a second recording in
# the same transaction never sees the first one's.
_EXPECTED_ISSUE = f"""COALESCE(
    (SELECT id FROM jobsys_issues WHERE {_OPEN_OUTAGE.format(fingerprint="%(outage)s")}),
    (SELECT id FROM jobsys_issues WHERE fingerprint = %(fingerprint)s))"""


@functools.cache
def record_with_issue_query(insert_failure: str) -> str:
    """The capture path's first statement around ``insert_failure``: the failures
    domain's INSERT of one failure row (``jobsys.failures.store``), with an
    ``{issue_id}`` placeholder for the issue it is expected to join."""
    return f"""
WITH f AS ({insert_failure.format(issue_id=_EXPECTED_ISSUE)}
), outage AS (
    UPDATE jobsys_issues
       SET {_JOIN_OUTAGE_SET.format(failure_id="(SELECT id FROM f)")}
     WHERE {_OPEN_OUTAGE.format(fingerprint="%(outage)s")} AND EXISTS (SELECT FROM f)
    RETURNING id
), own AS (
    INSERT INTO jobsys_issues AS i ({_FAILURE_ISSUE_COLUMNS})
    SELECT {_FAILURE_ISSUE_VALUES.format(failure_id="f.id")}
      FROM f
     WHERE NOT EXISTS (SELECT FROM outage)
    {_COUNT_IN_ISSUE}
    RETURNING i.id
)
SELECT set_config('jobsys.recorded_failure', COALESCE((SELECT id FROM f)::text, ''), true)
           AS failure_id,
       set_config('jobsys.recorded_issue',
                  COALESCE((SELECT id FROM outage UNION ALL SELECT id FROM own)::text, ''), true)
           AS issue_id
"""


# The rest of record_with_issue_query's recording, in the same transaction, with the issue row
# already locked: the account entry and its counter, the link if the guess was wrong, the
# live events (their ids added to payloads made by ``jobsys.live.publish.payload``).
def _count_account(issue_id: str, source: str) -> str:
    """CTEs ``added``/``bumped``: the failure's account in its issue's accounts, and the
    issue's counter up by one only when that account is new to it."""
    return f"""added AS (
    INSERT INTO jobsys_issue_accounts (issue_id, account_id)
    SELECT {issue_id}, %(account_id)s {source}
    ON CONFLICT DO NOTHING
    RETURNING issue_id
), bumped AS (
    UPDATE jobsys_issues SET affected_accounts = affected_accounts + 1
     WHERE id IN (SELECT issue_id FROM added)
)"""


_RECORDED_WITH_ACCOUNT = (
    "FROM recorded WHERE issue_id IS NOT NULL AND %(account_id)s::text IS NOT NULL"
)
FINISH_RECORDED = f"""
WITH recorded AS (
    SELECT NULLIF(current_setting('jobsys.recorded_failure'), '')::bigint AS failure_id,
           NULLIF(current_setting('jobsys.recorded_issue'), '')::bigint AS issue_id
), {_count_account("issue_id", _RECORDED_WITH_ACCOUNT)}, linked AS (
    UPDATE jobsys_failures f SET issue_id = r.issue_id
      FROM recorded r
     WHERE f.id = r.failure_id AND f.issue_id IS DISTINCT FROM r.issue_id
)
SELECT pg_notify(%(channel)s, (%(failure_event)s::jsonb
           || jsonb_build_object('failure_id', failure_id, 'issue_id', issue_id))::text),
       pg_notify(%(channel)s, (%(issue_event)s::jsonb
           || jsonb_build_object('issue_id', issue_id))::text)
  FROM recorded
 WHERE failure_id IS NOT NULL
"""

# Bounds for one recording transaction (``set_config(..., true)``: until it ends).
SET_LOCAL_TIMEOUTS = """
SELECT set_config('lock_timeout', %(lock)s, true),
       set_config('statement_timeout', %(statement)s, true)
"""

ADD_ACCOUNT = """
WITH added AS (
    INSERT INTO jobsys_issue_accounts (issue_id, account_id)
    VALUES (%(issue_id)s, %(account_id)s)
    ON CONFLICT DO NOTHING
    RETURNING issue_id
)
UPDATE jobsys_issues SET affected_accounts = affected_accounts + 1
 WHERE id IN (SELECT issue_id FROM added)
"""

# After the issue row is locked, everything else in ONE round trip (the lock is held
# until commit): the account entry and its counter, the failure's link, the events.
FINISH_FAILURE = f"""
WITH {_count_account("%(issue_id)s", "WHERE %(account_id)s::text IS NOT NULL")}, linked AS (
    UPDATE jobsys_failures SET issue_id = %(issue_id)s, fingerprint = %(fingerprint)s
     WHERE id = %(failure_id)s
)
SELECT pg_notify(%(channel)s, %(failure_event)s), pg_notify(%(channel)s, %(issue_event)s)
"""


async def upsert_failure_issue(conn: Any, params: dict[str, Any]) -> int:
    row = await fetch_one(conn, UPSERT_FAILURE_ISSUE, params)
    assert row is not None  # an upsert always returns its row
    return int(row["id"])


async def record_with_issue(
    conn: Any,
    insert_failure: str,
    params: dict[str, Any],
    settings: dict[str, str] | None = None,
) -> tuple[int, int] | None:
    """Record a new failure (``insert_failure``: see :func:`record_with_issue_query`),
    count it in its issue, add its account, publish its events: ONE round trip, one
    transaction (``settings``: SET_LOCAL_TIMEOUTS' values, applied first). (failure id,
    issue id), or None when that attempt was already recorded."""
    async with one_round_trip(conn):
        if settings is not None:
            await conn.execute(SET_LOCAL_TIMEOUTS, settings)
        cur = await conn.execute(record_with_issue_query(insert_failure), params)
        await conn.execute(FINISH_RECORDED, params)
    row = await cur.fetchone()
    assert row is not None  # one row, always
    failure_id, issue_id = (row["failure_id"], row["issue_id"]) if isinstance(row, dict) else row
    return (int(failure_id), int(issue_id)) if failure_id else None


async def join_outage(
    conn: Any, fingerprint: str, failure_id: int, occurred_at: datetime
) -> int | None:
    row = await fetch_one(
        conn,
        JOIN_OUTAGE,
        {"fingerprint": fingerprint, "failure_id": failure_id, "occurred_at": occurred_at},
    )
    return int(row["id"]) if row else None


async def add_account(conn: Any, issue_id: int, account_id: str) -> bool:
    """Record that ``account_id`` is affected; True when it is new for this issue."""
    return await execute(conn, ADD_ACCOUNT, {"issue_id": issue_id, "account_id": account_id}) > 0


async def finish_failure(conn: Any, params: dict[str, Any]) -> None:
    await conn.execute(FINISH_FAILURE, params)  # no result wanted: stays pipelined
