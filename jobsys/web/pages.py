"""The console's pages (GET): each calls the service function its CLI command calls.

Filters live in the query string, so every page has a URL to paste into a chat.
A bad filter value is shown next to the filter with the CLI's message (status 400,
the rest of the page still there), never a 500.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from jobsys.errors import JobsysError, NotFoundError, UsageError
from jobsys.web.app import console, guarded, render
from jobsys.web.auth import User

if TYPE_CHECKING:
    from jobsys.failures.filters import FailureFilter

FAILURE_FILTERS = (
    "kind",
    "task",
    "queue",
    "lane",
    "account",
    "profile",
    "issue",
    "since",
    "until",
    "error",
)
JOB_FILTERS = ("queue", "lane", "task", "status", "account", "since", "arg", "arg_contains")
RECENT_JOBS = 10
DEFAULT_LIMIT = 50
#: A text search in the args (``arg_contains``): the jobs page walks the ids newest
#: first, this many at a time, until it has a page of matches or the budget is spent,
#: then says how far it got and links to go on. Each range is searched as ``jobs list
#: --arg-contains`` does (the trigram index up to the search-index pass's cursor, the
#: newer jobs row by row: jobsys.jobs.search_index).
SEARCH_CHUNK_IDS = 5_000
SEARCH_BUDGET_SECONDS = 0.08
_OPTION = re.compile(r"^(?:[\w ]*?)--([a-z-]+)")

# Topics that make each page re-read itself (data-topics on <main>).
ALL_TOPICS = "jobs_changed job_failures_changed issues_changed dashboard_metrics_changed"
FAILURE_TOPICS = "job_failures_changed issues_changed jobs_changed"
JOB_TOPICS = "jobs_changed job_failures_changed"
ISSUE_TOPICS = "issues_changed job_failures_changed"


def _given(q: Any, name: str) -> str | None:
    """A query (or form) value; None when it is missing or blank."""
    raw = q.get(name)
    return None if raw is None or raw.strip() == "" else raw


def _int(q: Any, name: str) -> int | None:
    raw = _given(q, name)
    if raw is None:
        return None
    try:
        return int(raw)
    except ValueError:
        raise UsageError(f"--{name}: {raw!r} is not a valid integer.") from None


def _limit(q: Any) -> int:
    given = _int(q, "limit")
    return DEFAULT_LIMIT if given is None else given


def _text(q: Any, name: str) -> str | None:
    raw = q.get(name)
    return raw if raw is not None and raw != "" else None


def _bool(q: Any, name: str) -> bool | None:
    raw = (q.get(name) or "").lower()
    if raw == "":
        return None
    if raw in ("1", "true", "yes"):
        return True
    if raw in ("0", "false", "no"):
        return False
    raise UsageError(f"--{name}: {raw!r} is not one of true, false.")


def failure_filter(params: Any) -> FailureFilter:
    """The failures filter a query string (or a form) names, validated as the CLI does."""
    from jobsys.failures import filters

    return filters.failure_filters(
        kind=_text(params, "kind"),
        task=_text(params, "task"),
        queue=_text(params, "queue"),
        lane=_text(params, "lane"),
        account=_text(params, "account"),
        profile=_text(params, "profile"),
        issue=filters.id_value("issue", _given(params, "issue")),
        since=_text(params, "since"),
        until=_text(params, "until"),
        error=_text(params, "error"),
        retryable=_bool(params, "retryable"),
        before=filters.id_value("before", _given(params, "before")),
    )


def field_of(exc: JobsysError) -> str | None:
    """The filter a CLI message names (``--kind 'x' is not ...`` -> ``kind``)."""
    match = _OPTION.search(exc.message)
    return match.group(1).replace("-", "_") if match else None


def _detail(
    request: Request,
    user: User,
    template: str,
    title: str,
    data: dict[str, Any],
    topics: str,
) -> Response:
    """A page of one thing, or of a list with no filters: its title, the live topics
    that refresh it, and its data."""
    return render(request, template, {"title": title, "topics": topics, **data}, user=user)


# --- the dashboard ---------------------------------------------------------------------


async def dashboard(request: Request, user: User) -> Response:
    from jobsys.jobs.browser import JobFilters, list_jobs
    from jobsys.live.dashboard import snapshot_once

    c = console(request)
    settings = c.settings
    # Two connections side by side: the page costs the slower read, not their sum.
    snapshot, jobs = await asyncio.gather(
        snapshot_once(settings, c.config()),
        list_jobs(settings, c.config(with_tasks=True), JobFilters(limit=RECENT_JOBS)),
    )
    data = {"s": snapshot, "jobs": jobs}
    return _detail(request, user, "dashboard.html", "Background jobs", data, ALL_TOPICS)


# --- listings: one shape for every list page -------------------------------------------


async def _listing(
    request: Request,
    user: User,
    template: str,
    load: Callable[[], Awaitable[Any]],
    *,
    key: str,
    empty: Any,
    context: dict[str, Any],
) -> Response:
    """Render a list page; a bad filter (the CLI's UsageError, or ``--before`` naming no
    failure) is shown next to its field, status 400, with the page around it."""
    error: JobsysError | None = None
    data = empty
    try:
        data = await load()
    except (UsageError, NotFoundError) as exc:
        error = exc
    error_field = field_of(error) if error else None
    message = error.message if error else ""
    for name in ("queue", "lane", "status"):  # the jobs browser says "unknown queue 'x'"
        if error and error_field is None and message.startswith(f"unknown {name} "):
            error_field = name
    return render(
        request,
        template,
        {
            "q": request.query_params,
            key: data,
            "error": error,
            "error_field": error_field,
            **context,
        },
        status_code=400 if error else 200,
        user=user,
    )


async def _rows_listing(
    request: Request,
    user: User,
    template: str,
    list_rows: Callable[..., Awaitable[list[dict[str, Any]]]],
    filters: Callable[[QueryParams], dict[str, Any]],
    *,
    key: str,
    context: dict[str, Any],
) -> Response:
    """A list page whose rows are ``list_rows(settings, config, **filters(query))``, the
    service call of its CLI command (``filters`` reads and checks the query string: a
    bad value is shown as :func:`_listing` shows it)."""

    async def load() -> list[dict[str, Any]]:
        chosen = filters(request.query_params)
        c = console(request)
        return await list_rows(c.settings, c.config(), **chosen)

    return await _listing(request, user, template, load, key=key, empty=[], context=context)


async def failures(request: Request, user: User) -> Response:
    from jobsys.failures import filters, service

    q = request.query_params

    async def load() -> dict[str, Any]:
        chosen = failure_filter(q)
        limit = filters.check_limit(_limit(q))
        group_by = filters.check_group_by(q.get("group_by") or None)
        c = console(request)
        return await service.list_failures(
            c.settings,
            c.config,
            chosen,
            limit=limit,
            group_by=group_by,
            window=filters.check_window(q.get("window")),
        )

    return await _listing(
        request,
        user,
        "failures.html",
        load,
        key="result",
        empty={"failures": [], "groups": [], "notes": [], "next_before": None},
        context={
            "title": "Failures",
            "group_choices": filters.GROUP_BY,
            "count_cap": service.COUNT_CAP,
            # each group's key as the list filter that shows its failures
            "group_filters": {"task": "task", "queue": "queue", "kind": "kind", "issue": "issue"},
            # without a filter the retry page refuses (as `retry --all` does): no button
            "retry_link": (
                "/admin/retry?" + urlencode([("all", "1"), *chosen])
                if (chosen := _set(q, FAILURE_FILTERS))
                else None
            ),
            "topics": FAILURE_TOPICS,
        },
    )


def _set(q: QueryParams, names: tuple[str, ...]) -> list[tuple[str, str]]:
    return [(k, v) for k, v in q.multi_items() if k in names and v != ""]


async def failure(request: Request, user: User) -> Response:
    from jobsys.failures.service import show_failure
    from jobsys.jobs.browser import show_job
    from jobsys.retry.rules import refusal_known

    c = console(request)
    settings = c.settings
    found = await show_failure(settings, c.config, _path_id(request, "failure_id", "failure"))
    job: dict[str, Any] | None
    try:
        job = await show_job(settings, c.config(with_tasks=True), found["job_id"])
    except NotFoundError:  # deleted by retention: the failure row outlives its job
        job = None
    # Offered only when the retry rules may let it run: a failure whose job has
    # succeeded (or runs, or was retried) since shows why not instead.
    refused = refusal_known(found, job["status"] if job else None, job["failures"] if job else [])
    found["retry_state"] = _current_outcome(found["retry_state"], found["id"], job)
    return render(
        request,
        "failure.html",
        {
            "title": f"Failure {found['id']}",
            "f": found,
            "job": job,
            "refused": refused,
            "topics": FAILURE_TOPICS,
        },
        user=user,
    )


def _current_outcome(
    state: dict[str, Any], failure_id: int, job: dict[str, Any] | None
) -> dict[str, Any]:
    """The retry state as its job shows it now (the retry rules' own ``state_now``):
    the worker finishing the retried job announces ``jobs_changed``, the page re-reads,
    and the outcome and the last decision's words about the job change without
    waiting for the periodic check that records the outcome (``outcome_at`` stays
    empty until that check has run)."""
    from jobsys.retry.rules import failed_again_after, state_now

    if job is None:
        return state_now(state, None)
    return state_now(
        state, job["status"], failed_again_since=failed_again_after(failure_id, job["failures"])
    )


def _path_id(request: Request, key: str, what: str) -> int:
    raw = request.path_params[key]
    try:
        value = int(raw)
    except ValueError:
        raise NotFoundError(f"no {what} {raw!r}: {what} ids are whole numbers") from None
    if value < 1:
        raise NotFoundError(f"no {what} {value}")
    return value


# --- jobs -----------------------------------------------------------------------------


async def jobs(request: Request, user: User) -> Response:
    from jobsys.jobs.browser import JobFilters, list_jobs

    q = request.query_params
    searched: dict[str, Any] = {}

    async def load() -> list[dict[str, Any]]:
        chosen = JobFilters(
            queues=tuple(v for v in q.getlist("queue") if v),
            lane=_text(q, "lane"),
            task=_text(q, "task"),
            statuses=tuple(v for v in q.getlist("status") if v),
            account=_text(q, "account"),
            since=_text(q, "since"),
            limit=_limit(q),
            args=tuple(v for v in q.getlist("arg") if v),
            arg_contains=_text(q, "arg_contains"),
            below_id=_int(q, "below"),
        )
        c = console(request)
        settings, config = c.settings, c.config(with_tasks=True)
        if chosen.arg_contains is None:
            return await list_jobs(settings, config, chosen)
        rows, walked = await _search_jobs(settings, config, chosen)
        searched.update(walked)
        return rows

    context = {"title": "Jobs", "topics": JOB_TOPICS, "searched": searched}
    return await _listing(request, user, "jobs.html", load, key="jobs", empty=[], context=context)


async def _search_jobs(
    settings: Any, config: Any, chosen: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """``arg_contains`` a range of ids at a time, newest first, within the budget:
    the matches, and the ids searched (``top`` down to ``down_to``; ``next_below``
    continues, None when every older job was searched)."""
    from jobsys.jobs.browser import JobFilters, list_jobs

    top = chosen.below_id
    if top is None:
        newest = await list_jobs(settings, config, JobFilters(limit=1))
        top = newest[0]["id"] + 1 if newest else 1
    found: list[dict[str, Any]] = []
    low, started = top, time.monotonic()
    while low > 1 and len(found) < chosen.limit:
        bound = max(1, low - SEARCH_CHUNK_IDS)
        found += await list_jobs(
            settings,
            config,
            replace(chosen, from_id=bound, below_id=low, limit=chosen.limit - len(found)),
        )
        low = bound
        if time.monotonic() - started >= SEARCH_BUDGET_SECONDS:
            break
    if len(found) == chosen.limit:
        low = found[-1]["id"]  # the rest of that range is not searched yet
    return found, {"top": top - 1, "down_to": low, "next_below": low if low > 1 else None}


async def job(request: Request, user: User) -> Response:
    from jobsys.jobs.browser import show_job
    from jobsys.retry.rules import latest_refusal

    c = console(request)
    found = await show_job(
        c.settings, c.config(with_tasks=True), _path_id(request, "job_id", "job")
    )
    # As on the failure's page: a job that succeeded since is offered no retry.
    refused = latest_refusal(found) if found["failures"] else None
    data = {"j": found, "refused": refused}
    return _detail(request, user, "job.html", f"Job {found['id']}", data, JOB_TOPICS)


# --- issues ---------------------------------------------------------------------------


async def issues(request: Request, user: User) -> Response:
    from jobsys.issues import service

    q = request.query_params
    status = _text(q, "status") or "open"

    async def load() -> dict[str, Any]:
        c = console(request)
        return await service.list_issues(
            c.settings,
            c.config,
            status=service.check_status(status),
            kind=service.check_kind(_text(q, "kind")),
            limit=_limit(q),
        )

    context = {
        "title": "Issues",
        "status": status,
        "statuses": service.STATUS_CHOICES,
        "kinds": service.ISSUE_KINDS,
        "topics": ISSUE_TOPICS,
    }
    return await _listing(
        request, user, "issues.html", load, key="result", empty={"issues": []}, context=context
    )


async def issue(request: Request, user: User) -> Response:
    from jobsys.issues.service import show_issue

    c = console(request)
    found = await show_issue(c.settings, c.config, _path_id(request, "issue_id", "issue"))
    return _detail(request, user, "issue.html", f"Issue {found['id']}", {"i": found}, ISSUE_TOPICS)


# --- pipelines, schedule, fan-out --------------------------------------------------------


async def pipelines(request: Request, user: User) -> Response:
    from jobsys.pipelines.definitions import PIPELINE_STATUSES
    from jobsys.pipelines.service import list_pipelines

    return await _rows_listing(
        request,
        user,
        "pipelines.html",
        list_pipelines,
        lambda q: {"status": _text(q, "status"), "since": _text(q, "since"), "limit": _limit(q)},
        key="pipelines",
        context={"title": "Pipelines", "statuses": PIPELINE_STATUSES, "topics": JOB_TOPICS},
    )


async def pipeline(request: Request, user: User) -> Response:
    from jobsys.pipelines.service import show_pipeline

    c = console(request)
    found = await show_pipeline(
        c.settings, c.config(), _path_id(request, "pipeline_id", "pipeline")
    )
    return _detail(
        request, user, "pipeline.html", f"Pipeline {found['id']}", {"p": found}, JOB_TOPICS
    )


async def queues(request: Request, user: User) -> Response:
    from jobsys.config.application import load_config_tasks_if_they_load
    from jobsys.lanes.service import queue_overview

    settings = console(request).settings
    rows = await queue_overview(settings, load_config_tasks_if_they_load(settings))
    return _detail(request, user, "queues.html", "Queues", {"queues": rows}, ALL_TOPICS)


async def workers(request: Request, user: User) -> Response:
    from jobsys.lanes.workers import STATES, list_workers, none_in_state

    def filters(q: Any) -> dict[str, Any]:
        return {
            "every": _bool(q, "all") or False,
            "states": tuple(v for v in q.getlist("state") if v),
        }

    # The empty listing's words read the filters as the listing does (all=true too).
    try:
        given = filters(request.query_params)
    except UsageError:
        given = {"every": False, "states": ()}  # the listing refuses it
    return await _rows_listing(
        request,
        user,
        "workers.html",
        list_workers,
        filters,
        key="workers",
        context={
            "title": "Workers",
            "states": STATES,
            "topics": ALL_TOPICS,
            "none_in_state": none_in_state(given["every"], given["states"]),
        },
    )


async def worker(request: Request, user: User) -> Response:
    from jobsys.lanes.workers import show_worker

    c = console(request)
    found = await show_worker(c.settings, c.config(), request.path_params["worker_id"])
    return _detail(
        request,
        user,
        "worker.html",
        f"Worker {found['host']}:{found['pid']}",
        {"w": found},
        ALL_TOPICS,
    )


async def schedule(request: Request, user: User) -> Response:
    from jobsys.schedule import service

    c = console(request)
    entries = await service.list_entries(c.settings, c.config(with_tasks=True))
    return _detail(request, user, "schedule.html", "Schedule", {"entries": entries}, JOB_TOPICS)


async def fanouts(request: Request, user: User) -> Response:
    from jobsys.schedule import service

    return await _rows_listing(
        request,
        user,
        "fanouts.html",
        service.list_runs,
        lambda q: {"entry": _text(q, "entry"), "status": _text(q, "status"), "limit": _limit(q)},
        key="runs",
        context={"title": "Fan-out runs", "topics": JOB_TOPICS},
    )


async def fanout(request: Request, user: User) -> Response:
    from jobsys.schedule import service

    c = console(request)
    found = await service.show_run(
        c.settings, c.config(), _path_id(request, "run_id", "fan-out run")
    )
    return _detail(
        request, user, "fanout.html", f"Fan-out run {found['id']}", {"r": found}, JOB_TOPICS
    )


def routes() -> list[Route]:
    failures_back = ("/admin/background_jobs/failures", "Back to the failures")
    return [
        Route("/admin/background_jobs", guarded(dashboard)),
        Route("/admin/background_jobs/failures", guarded(failures)),
        Route("/admin/background_jobs/failures/{failure_id}", guarded(failure, back=failures_back)),
        Route("/admin/jobs", guarded(jobs)),
        Route("/admin/jobs/{job_id}", guarded(job, back=("/admin/jobs", "Back to the jobs"))),
        Route("/admin/issues", guarded(issues)),
        Route(
            "/admin/issues/{issue_id}", guarded(issue, back=("/admin/issues", "Back to the issues"))
        ),
        Route("/admin/pipelines", guarded(pipelines)),
        Route(
            "/admin/pipelines/{pipeline_id}",
            guarded(pipeline, back=("/admin/pipelines", "Back to the pipelines")),
        ),
        Route("/admin/queues", guarded(queues)),
        Route("/admin/workers", guarded(workers)),
        Route(
            "/admin/workers/{worker_id}",
            guarded(worker, back=("/admin/workers", "Back to the workers")),
        ),
        Route("/admin/schedule", guarded(schedule)),
        Route("/admin/fanout", guarded(fanouts)),
        Route(
            "/admin/fanout/{run_id}",
            guarded(fanout, back=("/admin/fanout", "Back to the fan-out runs")),
        ),
    ]
