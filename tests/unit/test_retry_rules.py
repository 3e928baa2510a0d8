"""The retry rules, retry_state and the failure filter: pure, every branch."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from jobsys.errors import UsageError
from jobsys.failures import filters
from jobsys.retry import rules
from jobsys.retry.rules import AutoPolicy, RetryFacts, backoff_seconds, decide, outcome_of
from jobsys.retry.state import next_state

NOW = datetime(2026, 2, 20, 3, 0, tzinfo=UTC)
POLICY = AutoPolicy(max_attempts=3, base_delay_seconds=30, max_delay_seconds=100)


def facts(**changes: Any) -> RetryFacts:
    base = RetryFacts(
        failure_id=7,
        job_id=70,
        kind="runtime",
        retryable=True,
        job_status="failed",
        task_exists=True,
        retry_state={},
        last_failed_at=NOW - timedelta(hours=1),
    )
    return dataclasses.replace(base, **changes)


@pytest.mark.parametrize(
    ("changes", "mode", "expected"),
    [
        ({}, "manual", rules.RETRIED),
        ({}, "auto", rules.RETRIED),
        ({}, "replay", rules.RETRIED),
        ({"kind": "authentication"}, "manual", rules.SKIPPED_AUTHENTICATION),
        ({"kind": "authentication", "retryable": True}, "replay", rules.SKIPPED_AUTHENTICATION),
        ({"kind": "authentication"}, "auto", rules.SKIPPED_AUTHENTICATION),
        ({"retryable": False}, "manual", rules.SKIPPED_NOT_RETRYABLE),
        (
            {"pipeline_status": "cancelled", "step_status": "failed"},
            "manual",
            rules.SKIPPED_TERMINAL_PIPELINE,
        ),
        (
            {"pipeline_status": "succeeded", "step_status": "succeeded"},
            "manual",
            rules.SKIPPED_TERMINAL_PIPELINE,
        ),
        (
            {"pipeline_status": "running", "step_status": "cancelled"},
            "manual",
            rules.SKIPPED_TERMINAL_PIPELINE,
        ),
        (
            {"pipeline_status": "failed", "step_status": "pending"},
            "manual",
            rules.SKIPPED_TERMINAL_PIPELINE,
        ),
        ({"pipeline_status": "failed", "step_status": "failed"}, "manual", rules.RETRIED),
        ({"pipeline_status": "running", "step_status": "failed"}, "manual", rules.RETRIED),
        (
            {"retry_state": {"outcome": "pending"}, "job_status": "todo"},
            "manual",
            rules.SKIPPED_ALREADY_RETRIED,
        ),
        (
            {"retry_state": {"outcome": "pending"}, "job_status": "succeeded"},
            "manual",
            rules.SKIPPED_ALREADY_RETRIED,
        ),
        (
            {"retry_state": {"outcome": "succeeded"}, "job_status": "succeeded"},
            "manual",
            rules.SKIPPED_ALREADY_RETRIED,
        ),
        ({"retry_state": {"outcome": "pending"}, "job_status": "failed"}, "manual", rules.RETRIED),
        ({"retry_state": {"outcome": "failed_again"}}, "manual", rules.RETRIED),
        (
            {"sibling_retry_pending": True, "job_status": "doing"},
            "manual",
            rules.SKIPPED_ALREADY_RETRIED,
        ),
        ({"sibling_retry_pending": True, "job_status": "failed"}, "manual", rules.RETRIED),
        ({"job_status": "todo"}, "manual", rules.SKIPPED_NOT_FAILED),
        ({"job_status": "doing"}, "manual", rules.SKIPPED_NOT_FAILED),
        ({"job_status": "succeeded"}, "manual", rules.SKIPPED_NOT_FAILED),
        ({"job_status": "cancelled"}, "manual", rules.SKIPPED_NOT_FAILED),
        ({"job_status": None}, "manual", rules.SKIPPED_NOT_FAILED),
        ({"task_exists": False}, "manual", rules.SKIPPED_UNKNOWN_TASK),
        ({"lock_conflict": True}, "manual", rules.CONFLICT),
        ({"outage_open": True}, "manual", rules.RETRIED),
        ({"outage_open": True}, "replay", rules.RETRIED),
        ({"outage_open": True}, "auto", rules.SKIPPED_OUTAGE_OPEN),
        ({"auto_attempts": 3}, "auto", rules.SKIPPED_AUTO_CAP),
        ({"auto_attempts": 3}, "manual", rules.RETRIED),
        ({"auto_attempts": 3}, "replay", rules.RETRIED),
        ({"last_failed_at": NOW - timedelta(seconds=29)}, "auto", rules.SKIPPED_BACKOFF),
        ({"last_failed_at": NOW - timedelta(seconds=29)}, "manual", rules.RETRIED),
        ({"last_failed_at": NOW - timedelta(seconds=30)}, "auto", rules.RETRIED),
        (
            {"auto_attempts": 1, "last_failed_at": NOW - timedelta(seconds=59)},
            "auto",
            rules.SKIPPED_BACKOFF,
        ),
        (
            {"auto_attempts": 2, "last_failed_at": NOW - timedelta(seconds=99)},
            "auto",
            rules.SKIPPED_BACKOFF,
        ),
        (
            {"auto_attempts": 2, "last_failed_at": NOW - timedelta(seconds=100)},
            "auto",
            rules.RETRIED,
        ),
        ({"last_failed_at": None}, "auto", rules.RETRIED),
    ],
)
def test_decide(changes: dict[str, Any], mode: rules.Mode, expected: str) -> None:
    decision = decide(facts(**changes), mode=mode, now=NOW, policy=POLICY)
    assert decision.decision == expected
    assert decision.new_job_id == (70 if expected == rules.RETRIED else None)
    assert decision.detail


def test_the_most_fundamental_reason_wins() -> None:
    everything_wrong = facts(
        kind="authentication",
        retryable=False,
        job_status="todo",
        task_exists=False,
        lock_conflict=True,
        pipeline_status="cancelled",
        retry_state={"outcome": "pending"},
    )
    order = [
        ({}, rules.SKIPPED_AUTHENTICATION),
        ({"kind": "runtime"}, rules.SKIPPED_NOT_RETRYABLE),
        ({"retryable": True}, rules.SKIPPED_TERMINAL_PIPELINE),
        ({"pipeline_status": None}, rules.SKIPPED_ALREADY_RETRIED),
        ({"retry_state": {}}, rules.SKIPPED_NOT_FAILED),
        ({"job_status": "failed"}, rules.SKIPPED_UNKNOWN_TASK),
        ({"task_exists": True}, rules.CONFLICT),
        ({"lock_conflict": False}, rules.RETRIED),
    ]
    current = everything_wrong
    for change, expected in order:
        current = dataclasses.replace(current, **change)
        assert decide(current, now=NOW).decision == expected


def test_backoff_doubles_and_caps() -> None:
    assert [backoff_seconds(POLICY, n) for n in range(5)] == [30, 60, 100, 100, 100]
    assert backoff_seconds(POLICY, 10_000) == 100
    decision = decide(
        facts(last_failed_at=NOW - timedelta(seconds=10)), mode="auto", now=NOW, policy=POLICY
    )
    assert decision.due_at == NOW + timedelta(seconds=20)


@pytest.mark.parametrize(
    ("outcome", "job_status", "expected"),
    [
        (None, "failed", None),
        ("succeeded", "failed", "succeeded"),
        ("pending", "todo", "pending"),
        ("pending", "doing", "pending"),
        ("pending", "succeeded", "succeeded"),
        ("pending", None, "succeeded"),
        ("pending", "failed", "failed_again"),
        ("pending", "cancelled", "cancelled"),
        ("pending", "aborted", "cancelled"),
    ],
)
def test_outcome_of(outcome: str | None, job_status: str | None, expected: str | None) -> None:
    assert outcome_of(outcome, job_status) == expected


def test_next_state_records_retries_and_outcomes() -> None:
    retried = decide(facts(), now=NOW)
    state = next_state({}, retried, actor="alice", batch_id="b1", mode="auto", now=NOW)
    assert state == {
        "last_decision": "retried",
        "last_detail": "retried",
        "decided_at": "2026-02-20T03:00:00Z",
        "actor": "alice",
        "batch_id": "b1",
        "auto_checked_at": "2026-02-20T03:00:00Z",
        "attempts": 1,
        "auto_attempts": 1,
        "retried_at": "2026-02-20T03:00:00Z",
        "retried_by": "alice",
        "retried_job_id": 70,
        "outcome": "pending",
        "outcome_at": None,
    }
    later = NOW + timedelta(minutes=5)
    refused = decide(facts(retry_state=state, job_status="succeeded"), now=later)
    after = next_state(state, refused, actor="bob", batch_id="b2", mode="manual", now=later)
    assert after["outcome"] == "succeeded" and after["outcome_at"] == "2026-02-20T03:05:00Z"
    assert after["last_decision"] == "skipped_already_retried" and after["actor"] == "bob"
    assert after["attempts"] == 1 and after["auto_checked_at"] == state["auto_checked_at"]
    # bob's refusal names alice, and so does carol's after it: the retrier, not the last actor
    assert after["retried_by"] == "alice" and after["retried_at"] == state["retried_at"]
    for earlier in (state, after):
        told = decide(facts(retry_state=earlier, job_status="todo"), now=later)
        assert told.retried_by == "alice"
        assert told.detail.startswith("already retried by alice (at 2026-02-20 03:00:00 UTC); ")
    again = decide(facts(retry_state=state, job_status="failed"), now=later)
    manual = next_state(state, again, actor="bob", batch_id="b3", mode="manual", now=later)
    assert (
        manual["attempts"] == 2 and manual["auto_attempts"] == 1 and manual["outcome"] == "pending"
    )
    backoff = decide(facts(last_failed_at=NOW), mode="auto", now=NOW, policy=POLICY)
    assert next_state({}, backoff, actor="auto", batch_id="b", mode="auto", now=NOW)[
        "auto_due_at"
    ] == ("2026-02-20T03:00:30Z")


def test_retried_by_in_a_state_recorded_before_it_was_kept() -> None:
    """States written before ``retried_by``: the actor names the retrier only when the
    last decision was the retry; after a refusal it may be the refused one, so nobody
    is named ("someone"), never the wrong person. ``retried_at`` was always kept."""
    old = {
        "last_decision": "retried",
        "actor": "alice",
        "retried_at": "2026-02-20T03:00:00.123456Z",
        "outcome": "pending",
    }
    assert rules.retried_by(old) == "alice"
    refused_after = {**old, "last_decision": "skipped_already_retried", "actor": "bob"}
    assert rules.retried_by(refused_after) is None
    told = decide(facts(retry_state=refused_after, job_status="todo"), now=NOW)
    assert told.retried_by is None
    assert told.detail == (
        "already retried by someone (at 2026-02-20 03:00:00 UTC); the job is waiting to run"
    )
    assert rules.retried_by({**refused_after, "retried_by": "alice"}) == "alice"


def test_filter_build_and_errors() -> None:
    flt = filters.failure_filters(
        kind="transient", issue=17, since="2h", until="2026-02-20T02:30:00", now=NOW
    )
    assert flt.since == NOW - timedelta(hours=2)
    assert flt.until == datetime(2026, 2, 20, 2, 30, tzinfo=UTC)
    assert flt.params() == {
        "kind": "transient",
        "issue": 17,
        "since": flt.since,
        "until": flt.until,
    }
    assert filters.FailureFilter().is_empty() and not flt.is_empty()
    assert filters.failure_filters(since="90s", now=NOW).since == NOW - timedelta(seconds=90)
    assert filters.failure_filters(since="1w", now=NOW).since == NOW - timedelta(days=7)
    for kwargs, message in (
        ({"kind": "fatal"}, "not a failure kind"),
        ({"issue": 0}, "--issue '0' is not an issue id: issue ids are whole numbers from 1"),
        ({"task": " "}, "--task must not be empty"),
        ({"since": "soon"}, "--since 'soon' is neither a duration nor an ISO-8601 time"),
        ({"since": "1h", "until": "2h"}, "--since must be before --until"),
    ):
        with pytest.raises(UsageError, match=message):
            filters.failure_filters(now=NOW, **kwargs)


def test_filter_where_binds_every_value() -> None:
    from jobsys.retry.store import filter_where

    where, params = filter_where(
        filters.failure_filters(task="x'; DROP TABLE t; --", lane="base", retryable=True)
    )
    assert where == "f.task = %(task)s AND f.lane = %(lane)s AND f.retryable = %(retryable)s"
    assert params == {"task": "x'; DROP TABLE t; --", "lane": "base", "retryable": True}
    assert filter_where(filters.FailureFilter()) == ("TRUE", {})


def test_the_batched_retry_calls_procrastinates_own_function() -> None:
    from procrastinate import sql

    from jobsys.engine.queries import RETRY_FUNCTION

    assert f"{RETRY_FUNCTION}(" in sql.queries["retry_job"]


@pytest.mark.parametrize(
    ("job_status", "tail"),
    [
        ("failed", ": that failure decides; retry it instead"),
        ("todo", " and is waiting to run again: nothing left to retry"),
        ("doing", " and is running again: nothing left to retry"),
        ("succeeded", " and has succeeded since: nothing left to retry"),
        ("cancelled", " and was cancelled since: nothing left to retry"),
        (None, " and no longer exists: nothing left to retry"),
    ],
)
def test_superseded_says_retry_the_newer_failure_only_while_the_job_is_failed(
    job_status: str | None, tail: str
) -> None:
    d = decide(facts(newer_failure=(9, "transient"), job_status=job_status))
    assert d.decision == rules.SKIPPED_SUPERSEDED
    assert d.detail == "the job failed again since (failure 9, transient)" + tail


@pytest.mark.parametrize(
    ("changes", "handled", "done"),
    [
        # never retried, the job still failed, its newer failure retried by nobody: not done
        ({}, set(), False),
        # ... unless this run retried the job through another of its failures
        ({}, {70}, True),
        # its own retry was made: the newer failure is what came of it
        ({"retry_state": {"outcome": "pending"}}, set(), True),
        # the job is no longer failed: its newer failure was retried, or it ran again
        ({"job_status": "todo"}, set(), True),
        ({"job_status": "succeeded"}, set(), True),
        ({"job_status": "succeeded", "retry_state": {"outcome": "pending"}}, set(), True),
        ({"job_status": None}, set(), True),
    ],
)
def test_a_superseded_failure_is_already_done_when_its_job_needs_nothing_more(
    changes: dict[str, Any], handled: set[int], done: bool
) -> None:
    d = decide(facts(newer_failure=(9, "transient"), **changes))
    assert d.decision == rules.SKIPPED_SUPERSEDED
    assert rules.already_done(d, handled) is done


@pytest.mark.parametrize(
    ("dry_run", "how"), [(False, "retried by this run"), (True, "which this run would retry")]
)
def test_a_failure_superseded_by_one_the_same_run_retried_says_so(dry_run: bool, how: str) -> None:
    """Decided first (oldest first, the job still failed), the older failure read "that
    failure decides; retry it instead" beside the run's own retry of the newer one."""
    older = decide(facts(newer_failure=(9, "transient")))
    newer = decide(facts(failure_id=9))
    other = decide(facts(failure_id=8, job_id=80, newer_failure=(10, "runtime")))
    assert (older.decision, newer.decision) == (rules.SKIPPED_SUPERSEDED, rules.RETRIED)
    settled = rules.superseded_in_run([older, other, newer], dry_run=dry_run)
    assert settled[0].detail == (
        f"the job failed again since (failure 9, transient), {how}: nothing left to retry"
    )
    assert settled[1:] == [other, newer]  # its newer failure is not this run's: unchanged
    assert settled[1].detail.endswith("that failure decides; retry it instead")


def test_already_done_is_already_retried_or_superseded_only() -> None:
    retried_before = decide(facts(job_status="todo", retry_state={"outcome": "pending"}))
    assert retried_before.decision == rules.SKIPPED_ALREADY_RETRIED
    assert rules.already_done(retried_before, set())
    for refused in (decide(facts(kind="authentication")), decide(facts(job_status="cancelled"))):
        assert not rules.already_done(refused, {70})
    assert not rules.already_done(decide(facts()), {70})  # retried now: not a refusal


@pytest.mark.parametrize("job_status", ["todo", "doing", "succeeded", None, "cancelled"])
def test_a_newer_final_failure_means_the_retry_failed_again(job_status: str | None) -> None:
    """Whatever the job did after its newer failure (that failure's own retry), this
    failure's retry failed again; a recorded outcome stays as recorded."""
    assert outcome_of("pending", job_status, failed_again_since=True) == "failed_again"
    assert outcome_of("succeeded", job_status, failed_again_since=True) == "succeeded"
    decision = decide(
        facts(
            job_status=job_status,
            retry_state={"outcome": "pending"},
            newer_failure=(9, "transient"),
            failed_again_since=True,
        )
    )
    assert decision.earlier_outcome == "failed_again"


def test_failed_again_after_counts_final_newer_failures_only() -> None:
    rows = [{"id": 3, "will_retry": False}, {"id": 5, "will_retry": True}]
    assert not rules.failed_again_after(3, rows)  # 5 was retried by Procrastinate itself
    assert rules.failed_again_after(2, rows)
    assert not rules.failed_again_after(5, [*rows, {"id": 4, "will_retry": False}])


def test_state_now_says_what_the_retried_job_does_now() -> None:
    """newuser L10: shown, a retry state speaks of the job as it is now; the reason
    code, actor and time stay as decided, and nothing else changes."""
    waiting = {
        "last_decision": "skipped_already_retried",
        "last_detail": "already retried by alice; the job is waiting to run",
        "actor": "bob",
        "decided_at": "2026-12-06T10:42:20Z",
        "outcome": "pending",
        "outcome_at": None,
    }
    assert rules.state_now(waiting, "todo") == waiting
    running = rules.state_now(waiting, "doing")
    assert running["last_detail"] == "already retried by alice; the job is running"
    assert running["outcome"] == "pending"
    done = rules.state_now(waiting, "succeeded")
    assert done == {
        **waiting,
        "last_detail": "already retried by alice; the job succeeded",
        "outcome": "succeeded",
        "outcome_seen": True,
    }
    # recorded by the periodic check, the words still spoke of a waiting job
    recorded = rules.state_now({**waiting, "outcome": "succeeded"}, "succeeded")
    assert recorded["last_detail"].endswith("the job succeeded")
    assert "outcome_seen" not in recorded
    again = rules.state_now(waiting, "succeeded", failed_again_since=True)
    assert again["outcome"] == "failed_again"
    assert again["last_detail"] == "already retried by alice; the job failed again since"
    superseded = {
        "last_decision": "skipped_superseded",
        "last_detail": "the job failed again since (failure 50, transient) and is waiting to "
        "run again: nothing left to retry",
    }
    assert rules.state_now(superseded, "succeeded")["last_detail"] == (
        "the job failed again since (failure 50, transient) and has succeeded since: "
        "nothing left to retry"
    )
    assert rules.state_now(superseded, "failed")["last_detail"].endswith("retry it instead")
    other = {"last_decision": "skipped_not_retryable", "last_detail": "classified as not retryable"}
    assert rules.state_now(other, "succeeded") == other
    not_failed = {
        "last_decision": "skipped_not_failed",
        "last_detail": decide(facts(job_status="todo")).detail,
        "actor": "bob",
    }
    assert not_failed["last_detail"] == "the job is todo, not failed"
    assert rules.state_now(not_failed, "todo") == not_failed
    assert rules.state_now(not_failed, "succeeded") == {
        **not_failed,
        "last_detail": "the job is succeeded, not failed",
    }
    assert rules.state_now(not_failed, None)["last_detail"] == (
        "the job no longer exists (removed by retention)"
    )
    assert rules.state_now(not_failed, "failed")["last_detail"] == (
        "the job was not failed then, and has failed since"
    )
    assert rules.state_now({}, None) == {}


# --- refusal_known: what a failure's page may tell without the dry run ---------------

FAILURE = {"id": 7, "job_id": 70, "kind": "runtime", "retryable": True, "retry_state": {}}
OWN = {"id": 7, "kind": "runtime", "will_retry": False}


@pytest.mark.parametrize(
    ("failure", "job_status", "job_failures", "expected"),
    [
        (FAILURE, "failed", [OWN], None),  # only the dry run can tell (task, lock...)
        (FAILURE, "succeeded", [OWN], ("skipped_not_failed", "the job is succeeded, not failed")),
        (
            FAILURE,
            None,
            [OWN],
            ("skipped_not_failed", "the job no longer exists (removed by retention)"),
        ),
        (
            {**FAILURE, "kind": "authentication"},
            "failed",
            [OWN],
            ("skipped_authentication", None),
        ),
        (
            FAILURE,
            "succeeded",
            [OWN, {"id": 9, "kind": "transient", "will_retry": True}],
            (
                "skipped_superseded",
                "the job failed again since (failure 9, transient) and has succeeded since: "
                "nothing left to retry",
            ),
        ),
        (
            {**FAILURE, "retry_state": {"outcome": "pending", "retried_by": "ana"}},
            "todo",
            [OWN],
            ("skipped_already_retried", "already retried by ana; the job is waiting to run"),
        ),
    ],
)
def test_refusal_known_from_the_page(
    failure: dict[str, Any],
    job_status: str | None,
    job_failures: list[dict[str, Any]],
    expected: tuple[str, str | None] | None,
) -> None:
    got = rules.refusal_known(failure, job_status, job_failures)
    if expected is None:
        assert got is None
        return
    assert got is not None and got.decision == expected[0]
    if expected[1] is not None:
        assert got.detail == expected[1]


def test_a_refusal_known_from_the_page_is_a_refusal_whatever_else_holds() -> None:
    """The facts the page does not read, at any value, never turn it into a retry."""
    for job_status in (None, "todo", "doing", "succeeded", "cancelled", "failed"):
        known = rules.refusal_known(FAILURE, job_status, [OWN])
        for other in (
            {"task_exists": False},
            {"lock_conflict": True},
            {"sibling_retry_pending": True},
            {"pipeline_status": "failed", "step_status": "succeeded"},
        ):
            full = decide(facts(job_status=job_status, **other))
            if known is not None:
                assert not full.retried, (job_status, other)
