"""Bulk actions on jobs by filter: ``jobs cancel --all``, ``jobs delete --all``,
``queues purge NAME``.

One shape for all three (see ``jobsys.engine.bulk`` for the SQL):

- the filters of ``jobs list`` (queue, lane, task, status, account, since, ``--arg``,
  ``--arg-contains``), plus ``--before`` for delete; every value is checked before
  anything runs (exit 2), and no filter at all is refused unless ``--everything``;
- which jobs an action may touch is fixed: cancel and purge take waiting and
  scheduled jobs (``todo``) and, with ``abort_running``, ask running ones to abort;
  delete takes finished jobs only. A ``--status`` outside that is a usage error;
- a dry run counts what matches (waiting, scheduled, running, finished by status)
  and shows a sample, changing nothing; otherwise ``confirm`` sees the same report
  first (the CLI asks unless ``--yes``), unless nothing matches: then nothing is
  asked and nothing written (no audit row);
- the work goes in chunks of ``chunk`` jobs, each one short transaction that also
  updates the audit row in ``jobsys_bulk_actions`` (who, when, filter, counts). Only
  jobs that existed when the action started are considered (id <= the highest id
  then). Interrupted, the done chunks stay done and the audit row says how many; the
  same command run again finds and finishes the rest.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobsys.engine import bulk as store
from jobsys.errors import RefusedError, UsageError
from jobsys.jobs import search
from jobsys.jobs.browser import STATUS_ALIASES, JobFilters, filter_params, parse_statuses
from jobsys.timespec import parse_time

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.failures.redaction import Redactor
    from jobsys.settings import Settings

#: Jobs per chunk: each chunk's transaction locks at most this many rows, briefly.
DEFAULT_CHUNK = 1000
MAX_CHUNK = 10_000
#: Times a delete's chunk may find a row still locked after ``LOCK_TIMEOUT`` before the
#: action stops (each try waits up to 1 s; the search-index pass holds a batch ~1 s).
CHUNK_LOCK_ATTEMPTS = 30
SAMPLE = 10
ACTIONS = ("jobs_cancel", "jobs_delete", "queues_purge")
#: The filter options every bulk command with filters takes (``jobs list``'s), and the
#: actions that also take ``--before``: what the refusal of no filter suggests.
FILTER_OPTIONS = ("--queue", "--task", "--status", "--arg")
BEFORE_ACTIONS = ("jobs_delete",)

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class BulkRequest:
    action: str
    filters: JobFilters = field(default_factory=JobFilters)
    before: str | None = None
    abort_running: bool = False
    everything: bool = False
    dry_run: bool = False
    #: Jobs per chunk (None: DEFAULT_CHUNK).
    chunk: int | None = None


def _as_typed(request: BulkRequest, status: str) -> str:
    """A refused ``--status`` as the operator typed it: ``running (doing)``, not only
    ``doing``, which they never wrote."""
    for raw in request.filters.statuses:
        if raw.lower() != status and STATUS_ALIASES.get(raw.lower()) == status:
            return f"{raw} ({status})"
    return status


def _statuses(request: BulkRequest) -> list[str]:
    given = parse_statuses(request.filters.statuses) or []
    if request.action == "jobs_delete":
        touching = [s for s in given if s not in store.FINISHED]
        if touching:
            raise UsageError(
                f"--status {_as_typed(request, touching[0])}: only finished jobs can be deleted "
                f"({', '.join(store.FINISHED)}); a waiting or running job is never deleted.",
                hint="Cancel waiting jobs with `jobsys jobs cancel --all`.",
            )
        return given or list(store.FINISHED)
    allowed = ["todo", "doing"] if request.abort_running else ["todo"]
    wrong = [s for s in given if s not in allowed]
    if wrong:
        hint = (
            "Add --abort-running to ask running jobs to abort."
            if wrong[0] == "doing"
            else "Finished jobs are removed with `jobsys jobs delete --all`."
        )
        raise UsageError(
            f"--status {_as_typed(request, wrong[0])}: a bulk cancel takes waiting and "
            "scheduled jobs (todo)"
            + (" and running ones (doing)" if request.abort_running else "")
            + ".",
            hint=hint,
        )
    return given or allowed


def _described_filters(request: BulkRequest) -> dict[str, Any]:
    """The filters as given (for the audit row, messages and JSON)."""
    chosen = {k: v for k, v in asdict(request.filters).items() if k != "limit" and v}
    if request.before:
        chosen["before"] = request.before
    if request.abort_running:
        chosen["abort_running"] = True
    if request.everything:
        chosen["everything"] = True
    return chosen


def _check(request: BulkRequest, now: datetime) -> datetime | None:
    if request.action not in ACTIONS:
        raise UsageError(f"unknown bulk action {request.action!r}")
    # As `jobs list` says it: an empty text is a mistake, not "no filter" (refused below).
    search.check_contains(request.filters.arg_contains)
    if request.chunk is not None and not 1 <= request.chunk <= MAX_CHUNK:
        raise UsageError(f"--chunk-size must be between 1 and {MAX_CHUNK}.")
    before = None
    if request.before is not None:
        if request.action not in BEFORE_ACTIONS:
            raise UsageError("--before applies to `jobs delete --all` only.")
        before = parse_time(request.before, "--before", now)
        if before > now:
            raise UsageError(
                f"--before {request.before!r} is in the future; give a time in the past "
                "(7d: jobs with no activity for 7 days)."
            )
    given = {k: v for k, v in _described_filters(request).items() if k != "everything"}
    given.pop("abort_running", None)
    if not given and not request.everything:
        raise RefusedError(
            "refusing a bulk action on every job: no filter given; nothing was changed.",
            hint=f"Give filters ({', '.join(filter_options(request.action))}...) or --everything.",
        )
    return before


def filter_options(action: str) -> tuple[str, ...]:
    """The filter options of ``action``'s command, as its refusal names them."""
    return FILTER_OPTIONS + (("--before",) if action in BEFORE_ACTIONS else ())


def _kept(rows: list[dict[str, Any]], contains: str | None, redactor: Redactor) -> list[Any]:
    """``rows`` whose args hold ``contains`` outside redacted values (all of them when
    None)."""
    if contains is None:
        return rows
    return [r for r in rows if search.contains_text(r["args_text"], contains, redactor)]


async def bulk_action(
    settings: Settings,
    config: Config,
    request: BulkRequest,
    *,
    confirm: Callable[[dict[str, Any]], bool] | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run (or with ``dry_run`` preview) one bulk action; the report as a dict.
    ``config`` with the application's tasks."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.failures.redaction import Redactor
    from jobsys.live.publish import publish_safely

    now = datetime.now(UTC)
    before = _check(request, now)
    redactor = Redactor.for_config(config)
    statuses = _statuses(request)
    contains = request.filters.arg_contains
    params: dict[str, Any] = {
        **filter_params(request.filters, config, redactor),
        "statuses": statuses,
        "before": before,
        "after": 0,
        "chunk": request.chunk or DEFAULT_CHUNK,
    }
    report: dict[str, Any] = {
        "action": request.action,
        "dry_run": request.dry_run,
        "actor": settings.operator,
        "filters": _described_filters(request),
        "audit_id": None,
    }
    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        params["upto"] = await store.max_id(conn)
        matched = await _count(conn, params, contains, redactor)
        sample_rows = _kept(
            await store.page(conn, {**params, "chunk": SAMPLE * 5}, lock=False), contains, redactor
        )
        report["matched"] = matched
        report["total"] = (
            sum(matched.values())
            if request.action == "jobs_delete"
            else (
                matched.get("waiting", 0)
                + matched.get("scheduled", 0)
                + (matched.get("running", 0) if request.abort_running else 0)
            )
        )
        report["sample"] = [
            {
                "id": r["id"],
                "task": r["task"],
                "queue": r["queue"],
                "status": r["status"],
                "args": redactor.redact(json.loads(r["args_text"])),
            }
            for r in sample_rows[:SAMPLE]
        ]
        report["done"] = {}
        if request.dry_run or report["total"] == 0:
            return report  # a preview, or nothing to act on: nothing to ask, nothing written
        if confirm is not None and not confirm(report):
            raise RefusedError("not confirmed; nothing was changed.")
        audit_id = await store.start_audit(
            conn,
            {
                "action": request.action,
                "actor": settings.operator,
                "filters": json.dumps(report["filters"], ensure_ascii=False),
                "matched": report["total"],
            },
        )
        report["audit_id"] = audit_id
        started = time.monotonic()
        done = await _run_chunks(
            conn, request, params, contains, redactor, audit_id, report, progress
        )
        report["seconds"] = round(time.monotonic() - started, 3)
        await store.finish_audit(conn, audit_id)
        report["done"] = done
        if any(done.values()):
            await publish_safely(conn, "jobs_changed", {**done, "bulk_action": audit_id})
    return report


async def _count(
    conn: Any, params: dict[str, Any], contains: str | None, redactor: Redactor
) -> dict[str, int]:
    if contains is None:
        return await store.count(conn, params)
    counts: dict[str, int] = {}
    page = {**params, "chunk": MAX_CHUNK}
    while True:
        rows = await store.page(conn, page, lock=False)
        for row in _kept(rows, contains, redactor):
            kind = row["status"]
            if kind == "todo":
                when = row["scheduled_at"]
                scheduled = when is not None and when > datetime.now(UTC)
                kind = "scheduled" if scheduled else "waiting"
            elif kind == "doing":
                kind = "running"
            counts[kind] = counts.get(kind, 0) + 1
        if len(rows) < page["chunk"]:
            return counts
        page["after"] = rows[-1]["id"]


async def _run_chunks(
    conn: Any,
    request: BulkRequest,
    params: dict[str, Any],
    contains: str | None,
    redactor: Redactor,
    audit_id: int,
    report: dict[str, Any],
    progress: Progress | None,
) -> dict[str, int]:
    if request.action == "jobs_delete":
        done = {"deleted": 0}
    else:
        done = {"cancelled": 0, "abort_requested": 0} if request.abort_running else {"cancelled": 0}
    import psycopg

    page = dict(params)
    report["max_chunk_seconds"] = 0.0
    waits = 0
    while True:
        began = time.monotonic()
        after, counted = page["after"], dict(done)
        try:
            async with conn.transaction():
                await store.lock_timeout(conn)
                deleting = request.action == "jobs_delete"
                rows = await store.page(conn, page, lock=True, deleting=deleting)
                if not rows:
                    break
                page["after"] = rows[-1]["id"]
                kept = _kept(rows, contains, redactor)
                if deleting:
                    ids = [r["id"] for r in kept]
                    done["deleted"] += await store.change(conn, store.DELETE, ids)
                    await store.change(conn, store.FORGET_UNIQUE, ids)
                else:
                    todo = [r["id"] for r in kept if r["status"] == "todo"]
                    done["cancelled"] += await store.change(conn, store.CANCEL, todo)
                    if request.abort_running:
                        doing = [r["id"] for r in kept if r["status"] == "doing"]
                        done["abort_requested"] += await store.change(conn, store.ABORT, doing)
                await store.count_audit(conn, audit_id, json.dumps(done))
        except psycopg.errors.LockNotAvailable:
            # A delete's chunk waited LOCK_TIMEOUT for a row another transaction holds
            # (engine.bulk.PICK): rolled back, the same chunk again.
            waits += 1
            if waits > CHUNK_LOCK_ATTEMPTS:
                so_far = ", ".join(f"{n} {what}" for what, n in done.items())
                raise RefusedError(
                    f"job rows stayed locked by another transaction through "
                    f"{CHUNK_LOCK_ATTEMPTS} tries; stopped after {so_far} (audit row {audit_id}).",
                    hint="Run the same command again to go on.",
                ) from None
            page["after"] = after
            done.clear()
            done.update(counted)
            continue
        waits = 0
        # How long this chunk's transaction held its row locks (commit included).
        took = time.monotonic() - began
        report["max_chunk_seconds"] = round(max(report["max_chunk_seconds"], took), 4)
        if progress is not None:
            progress(sum(done.values()), report["total"])
    return done
