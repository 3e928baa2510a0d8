"""``jobsys_failures.retry_state``: what the last retry decision did to a failure. PURE.

Keys (all optional; an empty object means never considered)::

    attempts          retries jobsys made of this failure (any actor)
    auto_attempts     of those, by the scheduled automatic retry
    last_decision     the reason code of the last decision (``retried``, ``skipped_...``)
    last_detail       its human explanation
    decided_at        when (ISO-8601 UTC)
    actor             who decided last: the operator name, or ``auto`` (maybe refused)
    batch_id          the run it belonged to
    retried_at        when it was last retried
    retried_by        who made that retry (the ``actor`` of the retry, not of a later
                      refusal; absent in states recorded before it was kept)
    retried_job_id    the job that runs again (Procrastinate retries in place: the same id)
    outcome           pending | succeeded | failed_again | cancelled
    outcome_at        when the outcome was learnt
    auto_checked_at   when the automatic retry last looked at it (throttles re-checks)
    auto_due_at       with ``skipped_backoff``: when its backoff ends
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from jobsys.retry.rules import OUTCOME_PENDING, RETRIED, Decision, Mode


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def next_state(
    old: dict[str, Any],
    decision: Decision,
    *,
    actor: str,
    batch_id: str,
    mode: Mode,
    now: datetime,
) -> dict[str, Any]:
    """The retry_state after ``decision`` (a new dict; ``old`` is not changed)."""
    state = dict(old)
    stamp = _iso(now)
    if decision.earlier_outcome is not None and decision.earlier_outcome != old.get("outcome"):
        state["outcome"] = decision.earlier_outcome
        state["outcome_at"] = stamp
    state.update(
        last_decision=decision.decision,
        last_detail=decision.detail,
        decided_at=stamp,
        actor=actor,
        batch_id=batch_id,
    )
    if mode != "manual":
        state["auto_checked_at"] = stamp
    if decision.due_at is not None:
        state["auto_due_at"] = _iso(decision.due_at)
    if decision.decision == RETRIED:
        state["attempts"] = int(old.get("attempts", 0)) + 1
        if mode == "auto":
            state["auto_attempts"] = int(old.get("auto_attempts", 0)) + 1
        state.update(
            retried_at=stamp,
            retried_by=actor,
            retried_job_id=decision.new_job_id,
            outcome=OUTCOME_PENDING,
            outcome_at=None,
        )
    return state
