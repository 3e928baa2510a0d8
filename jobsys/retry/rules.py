"""The retry rules: may this failure be retried now, and if not, why not. PURE.

Every retry path (``jobsys retry ID``, ``--all``, ``issues retry``, the automatic
batch retry, the outage replay) gathers the same :class:`RetryFacts` under row locks
and asks :func:`decide`. Nothing here touches the database or the clock: the caller
passes ``now``.

Order of the checks (the first that applies wins, so the reason is the most
fundamental one): authentication, not retryable, superseded by a newer failure of
the same job (an older transient failure must not re-run a job whose latest failure
is an authentication wall), terminal pipeline, already
retried, job not failed, unknown task, queueing-lock conflict, then the automatic
retry's own limits (open outage, cap, backoff).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from jobsys.clock import utc_text

RETRIED = "retried"
SKIPPED_AUTHENTICATION = "skipped_authentication"
SKIPPED_NOT_RETRYABLE = "skipped_not_retryable"
SKIPPED_SUPERSEDED = "skipped_superseded"
SKIPPED_TERMINAL_PIPELINE = "skipped_terminal_pipeline"
SKIPPED_ALREADY_RETRIED = "skipped_already_retried"
SKIPPED_NOT_FAILED = "skipped_not_failed"
SKIPPED_UNKNOWN_TASK = "skipped_unknown_task"
CONFLICT = "conflict"
SKIPPED_OUTAGE_OPEN = "skipped_outage_open"
SKIPPED_AUTO_CAP = "skipped_auto_cap"
SKIPPED_BACKOFF = "skipped_backoff"

REASONS = (
    RETRIED,
    SKIPPED_AUTHENTICATION,
    SKIPPED_NOT_RETRYABLE,
    SKIPPED_SUPERSEDED,
    SKIPPED_TERMINAL_PIPELINE,
    SKIPPED_ALREADY_RETRIED,
    SKIPPED_NOT_FAILED,
    SKIPPED_UNKNOWN_TASK,
    CONFLICT,
    SKIPPED_OUTAGE_OPEN,
    SKIPPED_AUTO_CAP,
    SKIPPED_BACKOFF,
)

#: Outcomes of a retried job, kept in ``retry_state.outcome``.
OUTCOME_PENDING = "pending"
OUTCOME_SUCCEEDED = "succeeded"
OUTCOME_FAILED_AGAIN = "failed_again"
OUTCOME_CANCELLED = "cancelled"

#: ``manual``: an operator; ``auto``: the scheduled retry (cap and backoff apply);
#: ``replay``: the retry after a service outage resolved (no cap, no backoff: the
#: failures were caused by the outage, and the service is back).
Mode = Literal["manual", "auto", "replay"]

_TERMINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class AutoPolicy:
    """The automatic retry's limits (``retry.auto`` in queues.yaml)."""

    max_attempts: int = 5
    base_delay_seconds: float = 30.0
    max_delay_seconds: float = 3600.0


@dataclass(frozen=True)
class RetryFacts:
    """Everything the rules look at, read under the failure's row lock."""

    failure_id: int
    job_id: int
    kind: str
    retryable: bool
    #: Procrastinate status of the job, None when the job row no longer exists.
    job_status: str | None
    task_exists: bool
    retry_state: Mapping[str, Any]
    pipeline_status: str | None = None
    step_status: str | None = None
    #: Another job holding the same queueing lock is waiting in the queue.
    lock_conflict: bool = False
    #: Another failure row of the same job has a jobsys retry whose outcome is pending.
    sibling_retry_pending: bool = False
    #: Automatic retries already made for this job (over all its failure rows).
    auto_attempts: int = 0
    #: When the job last failed (the start of the backoff).
    last_failed_at: datetime | None = None
    #: The failure joined a ``service_outage`` issue that is still open.
    outage_open: bool = False
    #: (id, kind) of a newer failure of the same job: that one, not this, decides.
    newer_failure: tuple[int, str] | None = None
    #: The job failed for good again after this failure (a newer failure row that
    #: Procrastinate does not retry by itself): a pending retry of this one failed again.
    failed_again_since: bool = False


@dataclass(frozen=True)
class Decision:
    failure_id: int
    job_id: int
    decision: str
    detail: str
    #: The job that will run when retried (Procrastinate retries the job in place).
    new_job_id: int | None = None
    #: ``retry_state.outcome`` of the earlier retry, brought up to date by ``outcome_of``.
    earlier_outcome: str | None = None
    #: With ``skipped_backoff``: when the automatic retry may try again.
    due_at: datetime | None = None
    #: With ``skipped_already_retried``: who made the earlier retry, when known.
    retried_by: str | None = None
    #: Procrastinate status of the job when decided (None: the row is gone).
    job_status: str | None = None

    @property
    def retried(self) -> bool:
        return self.decision == RETRIED


def backoff_seconds(policy: AutoPolicy, attempts: int) -> float:
    """The wait before automatic retry number ``attempts + 1``: base x 2^n, capped."""
    # Cap the exponent first: 2**attempts overflows floats long before max_attempts.
    exponent = min(max(attempts, 0), 62)
    return float(min(policy.base_delay_seconds * (2**exponent), policy.max_delay_seconds))


def outcome_of(
    outcome: str | None, job_status: str | None, *, failed_again_since: bool = False
) -> str | None:
    """The outcome of an earlier retry, given what its job did since.

    A retry puts the job back to ``todo`` in the same transaction that records
    ``pending``, so a job found ``failed`` afterwards has failed again. So has one
    with a newer final failure (``failed_again_since``), whatever became of the job
    after it: a later success came from that newer failure's retry, which is that
    failure's outcome, not this one's.
    """
    if outcome != OUTCOME_PENDING:
        return outcome
    if failed_again_since:
        return OUTCOME_FAILED_AGAIN
    if job_status in ("todo", "doing"):
        return OUTCOME_PENDING
    if job_status == "succeeded" or job_status is None:
        # A job row removed by retention was finished; only finished-ok rows are
        # usually pruned first, and failed ones keep their failure rows anyway.
        return OUTCOME_SUCCEEDED
    if job_status == "failed":
        return OUTCOME_FAILED_AGAIN
    return OUTCOME_CANCELLED


def failed_again_after(failure_id: int, failures: Iterable[Mapping[str, Any]]) -> bool:
    """Whether ``failures`` (the job's failure rows: ``id``, ``will_retry``) hold a final
    failure newer than ``failure_id``: ``outcome_of``'s ``failed_again_since``."""
    return any(f["id"] > failure_id and not f.get("will_retry") for f in failures)


#: The start of a ``skipped_superseded`` detail; the rest says what became of the job.
_SUPERSEDED_BY = "the job failed again since (failure "


def _superseded(newer: tuple[int, str], job_status: str | None) -> str:
    """Why a failure with a newer one is refused, and what is left to do: retry the
    newer failure only while the job is still failed."""
    return _superseded_now(f"{_SUPERSEDED_BY}{newer[0]}, {newer[1]})", job_status)


def _superseded_now(since: str, job_status: str | None) -> str:
    if job_status == "failed":
        return f"{since}: that failure decides; retry it instead"
    now = {
        "todo": "is waiting to run again",
        "doing": "is running again",
        "succeeded": "has succeeded since",
        None: "no longer exists",
    }.get(job_status, f"was {job_status} since")
    return f"{since} and {now}: nothing left to retry"


def superseded_in_run(decisions: Sequence[Decision], *, dry_run: bool) -> list[Decision]:
    """A run's verdicts, where a failure superseded by a newer one that the same run
    retried (a dry run: would retry) says so. Decided first (oldest first), while its
    job was still failed, it read "that failure decides; retry it instead" beside the
    run's own retry of that failure (the summary said "nothing left to retry")."""
    retried = {d.job_id for d in decisions if d.decision == RETRIED}
    out = []
    for d in decisions:
        if (
            d.decision == SKIPPED_SUPERSEDED
            and d.job_status == "failed"
            and d.job_id in retried
            and d.detail.startswith(_SUPERSEDED_BY)
        ):
            since, sep, _ = d.detail.partition(")")
            if sep:
                how = "which this run would retry" if dry_run else "retried by this run"
                d = dataclasses.replace(d, detail=f"{since}{sep}, {how}: nothing left to retry")
        out.append(d)
    return out


def _not_failed(job_status: str | None) -> str:
    """``skipped_not_failed``'s words for a job in ``job_status``: as decided, and as
    shown later by ``state_now`` with the job's status then (maybe failed since)."""
    if job_status is None:
        return "the job no longer exists (removed by retention)"
    if job_status == "failed":
        return "the job was not failed then, and has failed since"
    return f"the job is {job_status}, not failed"


#: What a retried job did, by its retry's outcome (a verdict's last words).
_RETRIED_JOB = {
    OUTCOME_PENDING: "is waiting to run",
    OUTCOME_SUCCEEDED: "succeeded",
    OUTCOME_FAILED_AGAIN: "failed again since",
    OUTCOME_CANCELLED: "was cancelled since",
}
_ALREADY_RETRIED_JOB = "; the job "


def _retried_job(outcome: str, job_status: str | None) -> str:
    if outcome == OUTCOME_PENDING and job_status == "doing":
        return "is running"
    return _RETRIED_JOB[outcome]


def state_now(
    state: Mapping[str, Any], job_status: str | None, *, failed_again_since: bool = False
) -> dict[str, Any]:
    """A failure's ``retry_state`` as true now, to show it (nothing is written).

    A ``pending`` outcome becomes what its job shows (``outcome_of``; ``outcome_seen``
    marks it as not recorded yet: the periodic check or the next decision records it,
    with ``outcome_at``). The last decision's words about the job ("already retried by
    alice; the job is waiting to run", "...and is running again: nothing left to
    retry", "the job is todo, not failed") say what the job does now; its reason code,
    actor and time stay as decided.
    """
    out = dict(state)
    outcome = out.get("outcome")
    if outcome == OUTCOME_PENDING:
        now = outcome_of(outcome, job_status, failed_again_since=failed_again_since)
        if now != OUTCOME_PENDING:
            out.update(outcome=now, outcome_seen=True)
            outcome = now
    detail = str(out.get("last_detail") or "")
    decision = out.get("last_decision")
    if decision == SKIPPED_ALREADY_RETRIED and outcome in _RETRIED_JOB:
        head, sep, _ = detail.rpartition(_ALREADY_RETRIED_JOB)
        if sep:
            out["last_detail"] = f"{head}{sep}{_retried_job(str(outcome), job_status)}"
    elif decision == SKIPPED_SUPERSEDED and detail.startswith(_SUPERSEDED_BY):
        since, sep, _ = detail.partition(")")
        if sep:
            out["last_detail"] = _superseded_now(since + sep, job_status)
    elif decision == SKIPPED_NOT_FAILED and detail.startswith("the job "):
        out["last_detail"] = _not_failed(job_status)
    return out


def retried_by(state: Mapping[str, Any]) -> str | None:
    """Who made the failure's retry (``retry_state.retried_by``), not whoever decided
    last: that may be an operator whose retry was refused. A state recorded before
    ``retried_by`` existed names the retrier only when its last decision was the retry
    itself (then ``actor`` is the retrier); otherwise None ("someone"): a refused
    operator is never named."""
    who = state.get("retried_by")
    if who is None and state.get("last_decision") == RETRIED:
        who = state.get("actor")
    return str(who) if who else None


def _at(stamp: Any) -> str:
    """`` (at 2026-12-05 21:13:00 UTC)`` for an ISO-8601 time of a retry state; "" when
    there is none."""
    if not stamp:
        return ""
    try:
        value = datetime.fromisoformat(str(stamp).replace("Z", "+00:00"))
    except ValueError:
        return f" (at {stamp})"
    return f" (at {utc_text(value, '%Y-%m-%d %H:%M:%S')})"


def already_done(decision: Decision, handled_jobs: AbstractSet[int]) -> bool:
    """Whether, for a bulk retry (``--all``, ``issues retry``), a refusal means the work
    is already done (story 5: re-running is harmless, and a colleague running the same
    command is told so).

    ``skipped_already_retried``, always. ``skipped_superseded`` when its job needs
    nothing more: the failure's own retry was made (the newer failure is what came of
    it), the job is no longer failed (its newer failure was retried, by anyone, or it
    ran again, or it was cancelled or removed), or ``handled_jobs`` (the jobs this run
    retried, or found already retried) has it. Left: a failure never retried whose job
    is still failed and whose newer failure nobody retried: "retry it instead"."""
    if decision.decision == SKIPPED_ALREADY_RETRIED:
        return True
    if decision.decision != SKIPPED_SUPERSEDED:
        return False
    return (
        decision.earlier_outcome is not None
        or decision.job_status != "failed"
        or decision.job_id in handled_jobs
    )


def _terminal_pipeline(facts: RetryFacts) -> str | None:
    if facts.pipeline_status is None:
        return None
    if facts.step_status in ("succeeded", "cancelled"):
        return f"its pipeline step already {facts.step_status}"
    if facts.pipeline_status in ("succeeded", "cancelled"):
        return f"its pipeline already {facts.pipeline_status}"
    if facts.pipeline_status == "failed" and facts.step_status != "failed":
        # The pipeline failed because of another step; this step's retry alone
        # could not finish it.
        return "its pipeline failed at another step"
    return None


def decide(
    facts: RetryFacts,
    *,
    mode: Mode = "manual",
    now: datetime | None = None,
    policy: AutoPolicy | None = None,
) -> Decision:
    """The verdict for one failure. ``now`` and ``policy`` matter in ``auto`` mode."""
    earlier = outcome_of(
        facts.retry_state.get("outcome"),
        facts.job_status,
        failed_again_since=facts.failed_again_since,
    )
    sibling = outcome_of(OUTCOME_PENDING, facts.job_status) if facts.sibling_retry_pending else None

    def verdict(reason: str, detail: str) -> Decision:
        return Decision(
            failure_id=facts.failure_id,
            job_id=facts.job_id,
            decision=reason,
            detail=detail,
            new_job_id=facts.job_id if reason == RETRIED else None,
            earlier_outcome=earlier,
            job_status=facts.job_status,
        )

    if facts.kind == "authentication":
        return verdict(
            SKIPPED_AUTHENTICATION,
            "authentication failure: retrying would burn the account; fix its login, "
            "the next scheduled run includes it again",
        )
    if not facts.retryable:
        return verdict(SKIPPED_NOT_RETRYABLE, "classified as not retryable")
    if facts.newer_failure is not None:
        return verdict(SKIPPED_SUPERSEDED, _superseded(facts.newer_failure, facts.job_status))
    terminal = _terminal_pipeline(facts)
    if terminal:
        return verdict(SKIPPED_TERMINAL_PIPELINE, terminal)
    if earlier in (OUTCOME_PENDING, OUTCOME_SUCCEEDED):
        who = retried_by(facts.retry_state)
        at = _at(facts.retry_state.get("retried_at"))
        job = _retried_job(earlier, facts.job_status)
        return dataclasses.replace(
            verdict(
                SKIPPED_ALREADY_RETRIED,
                f"already retried by {who or 'someone'}{at}{_ALREADY_RETRIED_JOB}{job}",
            ),
            retried_by=who,
        )
    if sibling in (OUTCOME_PENDING, OUTCOME_SUCCEEDED):
        return verdict(
            SKIPPED_ALREADY_RETRIED, "the job was already retried through another of its failures"
        )
    if facts.job_status != "failed":
        return verdict(SKIPPED_NOT_FAILED, _not_failed(facts.job_status))
    if not facts.task_exists:
        return verdict(
            SKIPPED_UNKNOWN_TASK, "its task is not registered any more (check --app / JOBSYS_APP)"
        )
    if facts.lock_conflict:
        return verdict(
            CONFLICT, "another job with the same queueing lock is waiting; retry it after that one"
        )
    if mode == "auto":
        policy = policy or AutoPolicy()
        if facts.outage_open:
            return verdict(
                SKIPPED_OUTAGE_OPEN, "its service outage is still open; replayed when it resolves"
            )
        if facts.auto_attempts >= policy.max_attempts:
            return verdict(
                SKIPPED_AUTO_CAP,
                f"{facts.auto_attempts} automatic retries made (cap {policy.max_attempts}); "
                "an operator decides now",
            )
        if facts.last_failed_at is not None and now is not None:
            wait = backoff_seconds(policy, facts.auto_attempts)
            due = facts.last_failed_at + timedelta(seconds=wait)
            if now < due:
                return dataclasses.replace(
                    verdict(SKIPPED_BACKOFF, f"backing off {wait:.0f}s after the last failure"),
                    due_at=due,
                )
    return verdict(RETRIED, "retried")


def refusal_known(
    failure: Mapping[str, Any],
    job_status: str | None,
    job_failures: Sequence[Mapping[str, Any]],
) -> Decision | None:
    """The refusal any manual retry of ``failure`` (its row: ``id``, ``job_id``, ``kind``,
    ``retryable``, ``retry_state`` as recorded) gets, told from what a failure's page
    reads: its job's status now and the job's failure rows (``id``, ``kind``,
    ``will_retry``). :func:`decide` on those facts, the rest (task registered, queueing
    lock, pipeline, another failure's pending retry) at the values that let a retry go
    on: whatever they are, this refusal stands (an earlier check may give another
    reason). None: only the decision itself (the dry run) can tell."""
    failure_id = int(failure["id"])
    newer = max(
        (f for f in job_failures if int(f["id"]) > failure_id),
        key=lambda f: int(f["id"]),
        default=None,
    )
    facts = RetryFacts(
        failure_id=failure_id,
        job_id=int(failure["job_id"]),
        kind=str(failure["kind"]),
        retryable=bool(failure["retryable"]),
        job_status=job_status,
        task_exists=True,
        retry_state=failure.get("retry_state") or {},
        newer_failure=(int(newer["id"]), str(newer["kind"])) if newer is not None else None,
        failed_again_since=failed_again_after(failure_id, job_failures),
    )
    decision = decide(facts)
    return None if decision.retried else decision


def latest_refusal(job: Mapping[str, Any]) -> Decision | None:
    """:func:`refusal_known` for a job's latest failure (the one ``jobs retry`` retries),
    ``job`` as ``jobs show`` reads it: ``id``, ``status`` and its ``failures`` oldest
    first (at least one)."""
    failures = job["failures"]
    return refusal_known({**failures[-1], "job_id": job["id"]}, job["status"], failures)


def is_terminal(status: str | None) -> bool:
    return status in _TERMINAL
