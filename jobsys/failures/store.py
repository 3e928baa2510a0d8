"""SQL for ``jobsys_failures``: the one place that writes and reads failure rows.

``insert_failure`` is idempotent per (job_id, attempt): capture, reconciliation and
the reaper may all try to record the same attempt; the first one wins.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

INSERT_FAILURE = """
INSERT INTO jobsys_failures (
    job_id, task, queue, lane, attempt, args, error_class, message, traceback,
    account_id, profile_id, kind, reason, retryable, will_retry, worker, service,
    fingerprint, issue_id, pipeline_step_id
) VALUES (
    %(job_id)s, %(task)s, %(queue)s, %(lane)s, %(attempt)s, %(args)s::jsonb, %(error_class)s,
    %(message)s, %(traceback)s, %(account_id)s, %(profile_id)s, %(kind)s, %(reason)s,
    %(retryable)s, %(will_retry)s, %(worker)s, %(service)s, %(fingerprint)s, %(issue_id)s,
    %(pipeline_step_id)s
)
ON CONFLICT (job_id, attempt) DO NOTHING
RETURNING id
"""


@dataclass
class FailureRow:
    """One failed attempt, ready to store. ``args`` must already be redacted."""

    job_id: int
    task: str
    queue: str
    attempt: int
    error_class: str
    message: str
    kind: str
    retryable: bool
    reason: str = "exception"
    lane: str | None = None
    args: dict[str, Any] = field(default_factory=dict)
    traceback: str | None = None
    account_id: str | None = None
    profile_id: str | None = None
    will_retry: bool = False
    worker: str | None = None
    service: str | None = None
    fingerprint: str | None = None
    issue_id: int | None = None
    pipeline_step_id: int | None = None


async def insert_failure(conn: Any, row: FailureRow) -> int | None:
    """Insert ``row``; return its id, or None when that attempt was already recorded."""
    params = asdict(row)
    params["args"] = json.dumps(row.args, default=str)
    cur = await conn.execute(INSERT_FAILURE, params)
    found = await cur.fetchone()
    if found is None:
        return None
    return int(found["id"] if isinstance(found, dict) else found[0])
