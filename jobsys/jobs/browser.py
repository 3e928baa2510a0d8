"""The jobs browser (the seed's Mission Control screen, in the terminal): list, show, cancel.

Filters are checked before the database is touched (unknown queue, lane or status,
a bad ``--since``: a usage error). Args are always redacted with the configured
:class:`~jobsys.failures.redaction.Redactor` before they leave this module.
Cancelling goes through Procrastinate's ``JobManager.cancel_job_by_id_async``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobsys.engine import queries
from jobsys.errors import RefusedError, UsageError, did_you_mean, not_found
from jobsys.jobs import search, search_index
from jobsys.live import store
from jobsys.timespec import parse_time

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.failures.redaction import Redactor
    from jobsys.settings import Settings

STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")
STATUS_ALIASES = {"waiting": "todo", "queued": "todo", "running": "doing"}
DEFAULT_LIMIT = 50
# Procrastinate's ids may be a few transactions out of order with their deferral
# times; scanning from a little earlier keeps ``--since`` exact (the deferral time
# is checked row by row).
SINCE_SCAN_MARGIN = timedelta(minutes=5)


@dataclass(frozen=True)
class JobFilters:
    queues: tuple[str, ...] = ()
    lane: str | None = None
    task: str | None = None
    statuses: tuple[str, ...] = ()
    account: str | None = None
    since: str | None = None
    limit: int = DEFAULT_LIMIT
    #: ``--arg KEY=VALUE`` and ``--arg-contains TEXT`` (jobsys.jobs.search).
    args: tuple[str, ...] = ()
    arg_contains: str | None = None
    #: Only jobs with ``from_id <= id < below_id`` (None: no bound): a search walked
    #: a range of ids at a time (the web console's ``arg_contains``).
    from_id: int | None = None
    below_id: int | None = None


def parse_statuses(values: tuple[str, ...]) -> list[str] | None:
    if not values:
        return None
    result = []
    for value in values:
        status = STATUS_ALIASES.get(value.lower(), value.lower())
        if status not in STATUSES:
            raise UsageError(
                f"unknown status {value!r}{did_you_mean(value, [*STATUSES, *STATUS_ALIASES])}; "
                f"use one of {', '.join(STATUSES)} (or waiting, running)"
            )
        result.append(status)
    return result


def _queues(filters: JobFilters, config: Config) -> list[str] | None:
    known = list(config.all_queues)
    for queue in filters.queues:
        if queue not in known:
            raise UsageError(
                f"unknown queue {queue!r}{did_you_mean(queue, known)}",
                hint="Queues are declared in config/queues.yaml (`jobsys queues` lists them).",
            )
    if filters.lane is None:
        return list(filters.queues) or None
    lane = config.lanes.get(filters.lane)
    if lane is None:
        hint = did_you_mean(filters.lane, list(config.lanes))
        raise UsageError(
            f"unknown lane {filters.lane!r}" + (hint or f"; configured: {', '.join(config.lanes)}")
        )
    if filters.queues:
        both = [q for q in filters.queues if q in lane.queues]
        if not both:
            raise UsageError(f"lane {lane.name!r} serves none of {', '.join(filters.queues)}")
        return both
    return list(lane.queues)


def _account_docs(account: str | None, task: str | None) -> list[str] | None:
    """JSON documents for ``args @> ANY(...)``: the task's account argument, as an
    integer and as a string (callers pass either)."""
    import json

    from jobsys import tasks

    if account is None:
        return None
    if task is not None:
        spec = tasks.get(task)
        names = {spec.account_arg} if spec and spec.account_arg else {"account_id"}
    else:
        names = {s.account_arg for s in tasks.registry().values() if s.account_arg}
        names = names or {"account_id"}
    values: list[Any] = [account]
    if re.fullmatch(r"-?\d{1,18}", account):
        values.append(int(account))
    return [json.dumps({name: value}) for name in sorted(names) for value in values]


def _job_row(row: dict[str, Any], config: Config, redactor: Redactor) -> dict[str, Any]:
    return {
        "id": row["id"],
        "task": row["task"],
        "queue": row["queue"],
        "lane": config.lane_of(row["queue"]),
        "status": row["status"],
        "attempts": row["attempts"],
        "priority": row["priority"],
        "scheduled_at": row["scheduled_at"],
        "created_at": row["created_at"],
        "abort_requested": row["abort_requested"],
        "args": redactor.redact(row["args"]),
    }


def filter_params(filters: JobFilters, config: Config, redactor: Redactor) -> dict[str, Any]:
    """The bound parameters of the filters ``jobs list`` and the bulk actions share
    (every value checked first: bad input is a UsageError, exit 2)."""
    return {
        "queues": _queues(filters, config),
        "task": filters.task,
        "account_docs": _account_docs(filters.account, filters.task),
        "since": parse_time(filters.since, "--since", datetime.now(UTC)) if filters.since else None,
        "arg_docs": search.arg_documents(search.parse_arg(a, redactor) for a in filters.args),
        "arg_contains": search.check_contains(filters.arg_contains),
    }


async def list_jobs(
    settings: Settings, config: Config, filters: JobFilters
) -> list[dict[str, Any]]:
    """Jobs matching ``filters``, newest first (``config`` with the application's tasks)."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.failures.filters import check_limit
    from jobsys.failures.redaction import Redactor

    check_limit(filters.limit)  # the one wording of a bad --limit, as failures list says it
    redactor = Redactor.for_config(config)
    params: dict[str, Any] = {
        **filter_params(filters, config, redactor),
        "statuses": parse_statuses(filters.statuses),
        "min_id": filters.from_id,
        "max_id": filters.below_id,
        "limit": filters.limit,
    }
    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        if params["since"] is not None:
            first = await store.fetch_one(
                conn, queries.FIRST_JOB_SINCE, {"since": params["since"] - SINCE_SCAN_MARGIN}
            )
            if first is None:
                return []
            params["min_id"] = max(first["job_id"], filters.from_id or 0)
        rows = await _matching_rows(conn, params, filters.arg_contains, redactor)
    return [_job_row(row, config, redactor) for row in rows]


async def _matching_rows(
    conn: Any, params: dict[str, Any], contains: str | None, redactor: Redactor
) -> list[dict[str, Any]]:
    """LIST_JOBS's rows; with ``--arg-contains``, the jobs not indexed yet (above the
    search-index pass's cursor) filtered row by row, then the indexed ones through the
    trigram index (jobsys.jobs.search_index), newest first, keeping only those whose
    args hold the text outside redacted values (``search.contains_text``: a candidate
    of the database may match on a secret, or on the side text's ``[REDACTED]``),
    page after page until ``limit`` are found or none are left."""
    if contains is None:
        return await store.fetch_all(conn, queries.LIST_JOBS, params)
    found: list[dict[str, Any]] = []
    cursor = await search_index.search_cursor(conn, redactor.keys)
    for query in (queries.LIST_JOBS_CONTAINING_TAIL, queries.LIST_JOBS_CONTAINING):
        page = {**params, "search_cursor": cursor}
        while True:
            rows = await store.fetch_all(conn, query, page)
            for row in rows:
                if search.contains_text(row["args_text"], contains, redactor):
                    found.append(row)
                    if len(found) == params["limit"]:
                        return found
            if len(rows) < page["limit"]:
                break
            page["max_id"] = rows[-1]["id"]
    return found


async def show_job(settings: Settings, config: Config, job_id: int) -> dict[str, Any]:
    """One job with its history, failures, retry state and pipeline. Unknown: exit 1.
    ``config`` with the application's tasks (their flow limits say why a job waits)."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.failures.redaction import Redactor
    from jobsys.flow.service import why_waiting

    redactor = Redactor.for_config(config)
    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        row = await store.fetch_one(conn, queries.GET_JOB, {"job_id": job_id})
        if row is None:
            raise not_found("job", job_id, listed_by="jobsys jobs list")
        history = await store.fetch_all(conn, queries.JOB_EVENTS, {"job_id": job_id})
        failures = await store.fetch_all(conn, store.JOB_FAILURES, {"job_id": job_id})
        retries = await store.fetch_all(conn, store.JOB_RETRY_EVENTS, {"job_id": job_id})
        pipeline = await store.fetch_one(conn, store.JOB_PIPELINE, {"job_id": job_id})
        waiting_because = await why_waiting(conn, config, row)
        steps = (
            await store.fetch_all(conn, store.PIPELINE_STEPS, {"pipeline_id": pipeline["id"]})
            if pipeline
            else []
        )
    secrets = redactor.secrets_in(row["args"])
    for failure in failures:
        failure["message"] = redactor.scrub(failure["message"] or "", secrets)
    job = _job_row(row, config, redactor)
    job.update(
        waiting_because=waiting_because,
        lock=row["lock"],
        queueing_lock=row["queueing_lock"],
        worker_id=row["worker_id"],
        history=[dict(h) for h in history],
        failures=[dict(f) for f in failures],
        retry_state=failures[-1]["retry_state"] if failures else None,
        retries=[dict(r) for r in retries],
        pipeline=({**dict(pipeline), "steps": [dict(s) for s in steps]} if pipeline else None),
    )
    return job


async def cancel_job(settings: Settings, config: Config, job_id: int) -> dict[str, Any]:
    """Waiting: cancelled. Running: abort requested. Anything else: refused (exit 2).
    Audited as a bulk cancel is, in the same transaction: a ``jobs_cancel`` row in
    ``jobsys_bulk_actions`` by ``settings.operator`` with the filter ``{"job_id": N}``."""
    import json

    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.engine import bulk as audit
    from jobsys.engine import manager
    from jobsys.live.publish import publish_safely

    url = resolve(settings, config).url
    async with connect(url) as conn:
        await check_schema(conn)
        outcome, audit_id = None, None
        for _ in range(2):  # a waiting job may start between our read and the cancel
            row = await store.fetch_one(conn, queries.GET_JOB, {"job_id": job_id})
            if row is None:
                raise not_found("job", job_id, listed_by="jobsys jobs list")
            status = row["status"]
            if status not in ("todo", "doing"):
                raise RefusedError(
                    f"job {job_id} is {status}: only waiting (todo) or running (doing) "
                    "jobs can be cancelled",
                    hint="A failed job is retried with `jobsys jobs retry`, not cancelled."
                    if status == "failed"
                    else None,
                )
            running = status == "doing"
            async with conn.transaction():
                if await manager.cancel_job(conn, job_id, abort=running):
                    outcome = "abort_requested" if running else "cancelled"
                    audit_id = await audit.start_audit(
                        conn,
                        {
                            "action": "jobs_cancel",
                            "actor": settings.operator,
                            "filters": json.dumps({"job_id": job_id}),
                            "matched": 1,
                        },
                    )
                    await audit.count_audit(conn, audit_id, json.dumps({outcome: 1}))
                    await audit.finish_audit(conn, audit_id)
                    break
        if outcome is None:
            raise RefusedError(f"job {job_id} changed state while cancelling; try again")
        await publish_safely(conn, "jobs_changed", {outcome: 1, "ids": [job_id]})
    return {"id": job_id, "previous_status": status, "result": outcome, "audit_id": audit_id}
