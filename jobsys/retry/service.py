"""Manual retry, as the CLI asks for it: given failures, a filter, or an issue.

Every request is validated before anything is written (unknown ids, unknown issue,
bad or missing filters, nothing matching). The work then goes chunk by chunk
(``retry.bulk_chunk_size``), each chunk its own short transaction, so an interrupted
run leaves whole chunks done and a re-run skips them (``skipped_already_retried``).
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobsys.errors import NotFoundError, RefusedError, UsageError, not_found
from jobsys.failures.filters import FailureFilter, check_names
from jobsys.retry import engine, store
from jobsys.retry.rules import RETRIED, Decision, superseded_in_run

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings

#: How many verdicts a human summary shows per reason (refused ones; in a dry run all).
SAMPLE_PER_REASON = 5
#: ``--all`` without ``--limit`` considers at most this many failures.
DEFAULT_BULK_LIMIT = 1_000_000
#: What a dry run reports instead of ``retried``: nothing ran, no job was touched.
WOULD_RETRY = "would_retry"

Progress = Callable[[int, int], None]
Confirm = Callable[["RetryReport"], bool]


@dataclass(frozen=True)
class RetryRequest:
    """Exactly one of: ``ids``; ``job`` (its latest failure); ``issue``; ``filter``
    (with ``all``)."""

    ids: tuple[int, ...] = ()
    job: int | None = None
    filter: FailureFilter = field(default_factory=FailureFilter)
    all: bool = False
    everything: bool = False
    issue: int | None = None
    limit: int | None = None
    dry_run: bool = False


@dataclass
class RetryReport:
    batch_id: str
    actor: str
    dry_run: bool
    matched: int
    filters: dict[str, Any]
    decisions: list[Decision] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        return dict(sorted(Counter(self.verdict(d) for d in self.decisions).items()))

    @property
    def would_retry(self) -> int:
        """How many failures the rules let through (retried, or in a dry run would be)."""
        return sum(1 for d in self.decisions if d.decision == RETRIED)

    @property
    def retried(self) -> int:
        return 0 if self.dry_run else self.would_retry

    @property
    def refused(self) -> int:
        return len(self.decisions) - self.would_retry

    def verdict(self, d: Decision) -> str:
        """The decision as reported: a dry run never claims that a retry happened."""
        return WOULD_RETRY if self.dry_run and d.decision == RETRIED else d.decision

    def sample(self) -> list[Decision]:
        """A few verdicts per reason: the refused ones (a real run lists its retries by
        count only); in a dry run the would-be retries too, so their ids can be checked."""
        seen: Counter[str] = Counter()
        out = []
        for d in self.decisions:
            shown = self.dry_run or d.decision != RETRIED
            if shown and seen[d.decision] < SAMPLE_PER_REASON:
                seen[d.decision] += 1
                out.append(d)
        return out

    def as_dict(self) -> dict[str, Any]:
        # A dry run has no batch and starts no job: those keys are null, not invented.
        return {
            "batch_id": None if self.dry_run else self.batch_id,
            "actor": self.actor,
            "dry_run": self.dry_run,
            "filters": self.filters,
            "matched": self.matched,
            "retried": self.retried,
            "would_retry": self.would_retry if self.dry_run else 0,
            "refused": self.refused,
            "counts": self.counts,
            "results": [
                {
                    "failure_id": d.failure_id,
                    "job_id": d.job_id,
                    "decision": self.verdict(d),
                    "detail": "would be retried" if self.verdict(d) == WOULD_RETRY else d.detail,
                    "new_job_id": None if self.dry_run else d.new_job_id,
                }
                for d in self.decisions
            ],
        }


def _validate(request: RetryRequest) -> None:
    chosen = sum(
        (bool(request.ids), request.all, request.issue is not None, request.job is not None)
    )
    if chosen != 1:
        raise UsageError(
            "give failure ids, or --all with filters (or an issue id).",
            hint="Examples: `jobsys retry 12 13`, `jobsys retry --all --issue 17 --dry-run`.",
        )
    if request.ids and not request.filter.is_empty():
        raise UsageError("filters apply to --all only, not to failure ids.")
    if request.all and request.filter.is_empty() and not request.everything:
        raise RefusedError(
            "--all without any filter would retry every failure.",
            hint="Add a filter (--issue, --kind, --task, --since ...) or pass --everything.",
        )
    if request.limit is not None and request.limit < 1:
        raise UsageError("--limit must be at least 1.")


async def retry(
    settings: Settings,
    config: Config,
    request: RetryRequest,
    *,
    confirm: Confirm | None = None,
    progress: Progress | None = None,
) -> RetryReport:
    """Retry the failures ``request`` names. ``confirm`` (unless --yes) sees a dry run first.
    ``config`` with the application's tasks: a retried job's task must be known."""
    from jobsys.db.connect import check_schema, connect, resolve

    _validate(request)
    check_names(request.filter, config.all_queues, config.lanes)
    chunk = config.queues.retry.bulk_chunk_size
    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        flt = request.filter
        if request.issue is not None:
            flt = FailureFilter(issue=request.issue)
        if request.job is not None:
            failure_id, job_exists = await store.latest_failure_of_job(conn, request.job)
            if failure_id is None and not job_exists:
                raise not_found("job", request.job, listed_by="jobsys jobs list")
            if failure_id is None:
                raise NotFoundError(
                    f"job {request.job} has no recorded failure; nothing to retry.",
                    hint="See `jobsys jobs show ID` and `jobsys failures list`.",
                )
            request = replace(request, ids=(failure_id,), job=None)
        if flt.issue is not None and await store.issue(conn, flt.issue) is None:
            raise not_found("issue", flt.issue, listed_by="jobsys issues list --status all")
        if request.ids:
            missing = sorted(set(request.ids) - await store.existing_ids(conn, request.ids))
            if missing:
                raise not_found(
                    "failure",
                    ", ".join(map(str, missing)),
                    listed_by="jobsys failures list",
                    then="nothing was retried",
                )
            unique = list(dict.fromkeys(request.ids))
            ids: list[int] | None = unique
            matched = len(unique)
        else:
            ids = None
            matched = await store.count_matching(conn, flt, request.limit or DEFAULT_BULK_LIMIT)
            if matched == 0:
                raise NotFoundError(
                    "no failure matches these filters; nothing was retried.",
                    hint="Check them with `jobsys failures list` and the same filters.",
                )

        async def run(dry_run: bool, tick: Progress | None) -> RetryReport:
            report = RetryReport(
                batch_id=uuid.uuid4().hex[:16],
                actor=settings.operator,
                dry_run=dry_run,
                matched=matched,
                filters={"ids": list(ids)} if ids else flt.params(),
            )
            async for part in _chunks(conn, ids, flt, chunk, matched):
                report.decisions += await engine.decide_chunk(
                    conn,
                    part,
                    actor=settings.operator,
                    batch_id=report.batch_id,
                    mode="manual",
                    now=datetime.now(UTC),
                    dry_run=dry_run,
                )
                if tick:
                    tick(len(report.decisions), matched)
            report.decisions = superseded_in_run(report.decisions, dry_run=dry_run)
            return report

        if request.dry_run:
            return await run(True, progress)
        if confirm is not None and not confirm(await run(True, None)):
            # Without a terminal (a script, a pipe, cron) the prompt reads end of input,
            # which counts as no: the way through is --yes.
            raise RefusedError(
                "not confirmed; nothing was changed.",
                hint="Pass --yes to confirm without a prompt.",
            )
        return await run(False, progress)


async def _chunks(
    conn: Any, ids: list[int] | None, flt: FailureFilter, size: int, limit: int
) -> Any:
    if ids is not None:
        for start in range(0, len(ids), size):
            yield ids[start : start + size]
        return
    after, seen = 0, 0
    while seen < limit:
        part = await store.next_ids(conn, flt, after=after, limit=min(size, limit - seen))
        if not part:
            return
        yield part
        after, seen = part[-1], seen + len(part)
