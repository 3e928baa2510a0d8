"""The console's actions: every one a POST with a CSRF token, by an admin, through the
same service function (and so the same rules and audit rows) as its CLI command, with
``web:<user>`` as the actor.

Retrying is two steps, as ``jobsys retry --all`` without ``--yes``: ``GET
/admin/retry?...`` runs the dry run and shows every verdict; its form POSTs the same
request, which then runs for real and shows what was done and what was refused (e.g.
``skipped_authentication`` and why).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from jobsys.clock import utc_text
from jobsys.errors import NotFoundError, UsageError
from jobsys.web.app import console, guarded, render
from jobsys.web.auth import User
from jobsys.web.pages import FAILURE_FILTERS, _given, _int, failure_filter

ISSUE_ACTIONS = ("resolve", "mute", "reopen")
RETRY_KEYS = ("failure", "issue", "all", "limit", *FAILURE_FILTERS)


def retry_request(params: Any, *, dry_run: bool) -> tuple[Any, str, str]:
    """The :class:`RetryRequest` the parameters name, what it is in words, and where to
    go back to."""
    from jobsys.failures.filters import id_value
    from jobsys.retry.service import RetryRequest

    # A bad id is refused as the failure filters (and the CLI) refuse it.
    failure = id_value("failure", _given(params, "failure"))
    limit = _int(params, "limit")
    if failure is not None:
        where = f"/admin/background_jobs/failures/{failure}"
        return RetryRequest(ids=(failure,), dry_run=dry_run), f"failure {failure}", where
    if params.get("all") == "1":
        chosen = failure_filter(params)
        shown = ", ".join(f"{k}={v}" for k, v in chosen.params().items()) or "no filter"
        query = urlencode([(k, params.get(k)) for k in FAILURE_FILTERS if params.get(k)])
        return (
            RetryRequest(filter=chosen, all=True, limit=limit, dry_run=dry_run),
            f"every failure matching {shown}",
            f"/admin/background_jobs/failures?{query}",
        )
    issue = id_value("issue", _given(params, "issue"))
    if issue is not None:
        return (
            RetryRequest(issue=issue, limit=limit, dry_run=dry_run),
            f"the failures of issue {issue}",
            f"/admin/issues/{issue}",
        )
    raise UsageError(
        "give failure=ID, issue=ID, or all=1 with filters.",
        hint="Start from a failure, an issue, or the failures list.",
    )


async def retry_preview(request: Request, user: User) -> Response:
    return await _retry_page(request, user, request.query_params, dry_run=True)


async def retry_run(request: Request, user: User) -> Response:
    return await _retry_page(request, user, await request.form(), dry_run=False)


async def _retry_page(request: Request, user: User, params: Any, *, dry_run: bool) -> Response:
    """Run the retry ``params`` name (the dry run, or for real) and show its report; the
    dry run's form carries the same parameters to POST."""
    from jobsys.retry.service import retry

    req, what, back = retry_request(params, dry_run=dry_run)
    c = console(request)
    report = await retry(c.actor_settings(user), c.config(with_tasks=True), req)
    hidden = [(k, v) for k, v in params.multi_items() if k in RETRY_KEYS and v != ""]
    return render(
        request,
        "retry.html",
        {
            "title": "Retry: dry run" if dry_run else "Retry: done",
            "what": what,
            "back": back,
            "report": report.as_dict(),
            "hidden": hidden if dry_run else [],
            "done": not dry_run,
            "topics": "",
        },
        user=user,
    )


def _done(request: Request, where: str, message: str) -> Response:
    request.session["flash"] = message
    return RedirectResponse(where, status_code=303)


def _id(request: Request, key: str) -> int:
    from jobsys.web.pages import _path_id

    return _path_id(request, key, key.removesuffix("_id"))


async def issue_action(request: Request, user: User) -> Response:
    from jobsys.issues import service

    issue_id = _id(request, "issue_id")
    action = request.path_params["action"]
    if action not in ISSUE_ACTIONS:
        raise NotFoundError(f"no issue action {action!r}; use one of {', '.join(ISSUE_ACTIONS)}")
    c = console(request)
    settings = c.actor_settings(user)
    if action == "resolve":
        row = await service.resolve_issue(settings, c.config, issue_id)
        said = "resolved"
    elif action == "mute":
        form = await request.form()
        duration = str(form.get("for") or "")
        if not duration:
            raise UsageError("--for: say how long to mute, e.g. 2h.")
        row = await service.mute_issue(settings, c.config, issue_id, duration)
        said = f"muted until {utc_text(row['muted_until'])}"
    else:
        row = await service.reopen_issue(settings, c.config, issue_id)
        said = "reopened"
    return _done(request, f"/admin/issues/{issue_id}", service.change_note(row, said))


async def job_cancel(request: Request, user: User) -> Response:
    from jobsys.jobs.browser import cancel_job

    job_id = _id(request, "job_id")
    c = console(request)
    result = await cancel_job(c.actor_settings(user), c.config(), job_id)
    said = (
        "cancelled (it was waiting)"
        if result["result"] == "cancelled"
        else "is running: abort requested (the task stops at its next check)"
    )
    return _done(request, f"/admin/jobs/{job_id}", f"job {job_id} {said}")


async def pipeline_cancel(request: Request, user: User) -> Response:
    from jobsys.pipelines.service import cancel_pipeline

    pipeline_id = _id(request, "pipeline_id")
    c = console(request)
    result = await cancel_pipeline(c.actor_settings(user), c.config(), pipeline_id)
    if result["already_cancelled"]:
        said = "was already cancelled"
    else:
        said = (
            f"cancelled: {len(result['cancelled_jobs'])} waiting job(s) cancelled, "
            f"{len(result['abort_requested_jobs'])} running job(s) asked to abort"
        )
    return _done(request, f"/admin/pipelines/{pipeline_id}", f"pipeline {pipeline_id} {said}")


async def schedule_action(request: Request, user: User) -> Response:
    from jobsys.schedule import service

    name = request.path_params["name"]
    if request.path_params["action"] not in ("pause", "resume"):
        raise NotFoundError(f"no schedule action {request.path_params['action']!r}")
    paused = request.path_params["action"] == "pause"
    c = console(request)
    result = await service.set_paused(
        c.actor_settings(user), c.config(with_tasks=True), name, paused
    )
    return _done(request, "/admin/schedule", service.paused_note(result))


async def queue_action(request: Request, user: User) -> Response:
    """Pause or resume a queue, or a lane's queues (``queues pause NAME --for --reason``)."""
    from jobsys.flow import service

    name = request.path_params["name"]
    action = request.path_params["action"]
    if action not in ("pause", "resume"):
        raise NotFoundError(f"no queue action {action!r}; use pause or resume")
    c = console(request)
    settings, config = c.actor_settings(user), c.config()
    if action == "pause":
        form = await request.form()
        result = await service.set_paused(
            settings,
            config,
            name,
            paused=True,
            for_=str(form.get("for") or "") or None,
            reason=str(form.get("reason") or "").strip() or None,
        )
        said = f"paused {', '.join(result['queues'])}"
        if result["until"] is not None:
            said += f" until {utc_text(result['until'])}"
    else:
        result = await service.set_paused(settings, config, name, paused=False)
        said = f"resumed {', '.join(result['queues'])}"
    return _done(request, "/admin/queues", said)


def routes() -> list[Route]:
    failures = ("/admin/background_jobs/failures", "Back to the failures")
    return [
        Route("/admin/retry", guarded(retry_preview, back=failures)),
        _action("/admin/retry", retry_run, failures),
        _action(
            "/admin/issues/{issue_id}/{action:str}",
            issue_action,
            ("/admin/issues", "Back to the issues"),
        ),
        _action("/admin/jobs/{job_id}/cancel", job_cancel, ("/admin/jobs", "Back to the jobs")),
        _action(
            "/admin/pipelines/{pipeline_id}/cancel",
            pipeline_cancel,
            ("/admin/pipelines", "Back to the pipelines"),
        ),
        _action(
            "/admin/queues/{name}/{action:str}",
            queue_action,
            ("/admin/queues", "Back to the queues"),
        ),
        _action(
            "/admin/schedule/{name}/{action:str}",
            schedule_action,
            ("/admin/schedule", "Back to the schedule"),
        ),
    ]


def _action(path: str, handler: Any, back: tuple[str, str]) -> Route:
    """An action's route: POST only, behind the CSRF and role checks (``act``)."""
    return Route(path, guarded(handler, back=back, act=True), methods=["POST"])
