"""``jobsys retry``: retry failed jobs by failure id, or in bulk by filter; and
``issues_retry``, the ``jobsys issues retry ISSUE_ID`` command (attached to the
``issues`` group in ``cli/main.py``).

Exit codes: 0 every failure was retried (or a dry run), or a bulk retry found the
rest already done (``rules.already_done``: already retried, or superseded by a newer
failure of a job that needs nothing more); 3 some were refused for another reason, or
a failure named by id was refused (each verdict says why); 1 unknown ids / nothing
matches; 2 bad input or refused request.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from jobsys.cli._context import config, run, settings
from jobsys.cli._options import EverythingOpt, JsonOpt, YesOpt, id_argument, option_group
from jobsys.cli.failures import failure_filter_options
from jobsys.errors import EXIT_PARTIAL

if TYPE_CHECKING:
    from jobsys.failures.filters import FailureFilter
    from jobsys.retry.service import RetryReport, RetryRequest

#: ``--dry-run`` of a retry: the verdicts, not a count (not the bulk actions' option).
VerdictsOpt = Annotated[bool, typer.Option("--dry-run", help="Show the verdicts; change nothing.")]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", help="Consider at most this many failures (oldest first).")
]


@option_group(chosen=failure_filter_options)
def retry(
    ctx: typer.Context,
    failure_ids: Annotated[
        list[int] | None,
        id_argument(
            "failure",
            "jobsys failures list",
            help="Failure ids (see `jobsys failures list`).",
            metavar="ID...",
        ),
    ] = None,
    all_: Annotated[
        bool, typer.Option("--all", help="Retry every failure the filters match.")
    ] = False,
    everything: EverythingOpt = False,
    *,
    chosen: FailureFilter,
    limit: LimitOpt = None,
    dry_run: VerdictsOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Retry failed jobs: by failure id, or all that match filters (--all).

    Refuses what must not run again (authentication failures, terminal pipelines,
    jobs already retried or not failed) and says why, per failure. Exit 0 when
    every failure was retried (with --all: or was already done: retried already, by
    anyone, or its job failed again since and was retried or ran again after), 3
    when any was refused for another reason. Without --yes, --all previews the
    verdicts and asks (on stderr).
    """
    from jobsys.retry.service import RetryRequest

    request = RetryRequest(
        ids=tuple(failure_ids or ()),
        filter=chosen,
        all=all_,
        everything=everything,
        limit=limit,
        dry_run=dry_run,
    )
    execute(ctx, request, yes=yes or bool(failure_ids), json=json)


def issues_retry(
    ctx: typer.Context,
    issue_id: Annotated[
        int, id_argument("issue", "jobsys issues list", help="Issue id (see `jobsys issues list`).")
    ],
    limit: LimitOpt = None,
    dry_run: VerdictsOpt = False,
    yes: YesOpt = False,
    json: JsonOpt = False,
) -> None:
    """Retry the failures of an issue (same rules and exit codes as `jobsys retry`).
    Without --yes it previews the verdicts and asks (on stderr), as `retry --all` does.
    While the service its failures depend on has an open outage it also warns and asks
    first: the retried jobs would most likely fail again."""
    from jobsys.cli import _output
    from jobsys.issues.service import open_outage_for
    from jobsys.retry.service import RetryRequest

    outage = None if dry_run else run(open_outage_for(settings(ctx), lambda: config(ctx), issue_id))
    if outage is not None:
        _output.say(
            f"warning: service {outage['service']!r} has an open outage (issue "
            f"{outage['id']}: {outage['title']}); retried jobs would most likely fail "
            "again. Once it resolves, the failures that joined it are retried by themselves."
        )
        if not yes:
            _output.confirm("Retry during the outage anyway?")
    execute(ctx, RetryRequest(issue=issue_id, limit=limit, dry_run=dry_run), yes=yes, json=json)


def execute(ctx: typer.Context, request: RetryRequest, *, yes: bool, json: bool) -> None:
    from jobsys.cli import _output
    from jobsys.cli._pipe import committed
    from jobsys.retry.rules import SKIPPED_ALREADY_RETRIED, SKIPPED_SUPERSEDED, already_done
    from jobsys.retry.service import retry as retry_service

    def confirm(preview: RetryReport) -> bool:
        _output.retry_summary(preview, to_stderr=True)
        if preview.would_retry == 0:
            return True  # nothing would be retried: no question; the run says why
        # The prompt is chatter, on stderr: stdout stays clean for the data.
        noun = "failure" if preview.matched == 1 else "failures"
        _output.confirm(f"Retry {preview.would_retry} of {preview.matched} {noun}?")
        return True

    # A dry run retries nothing: its bar must not say so (a long preview read "retrying").
    with _output.progress_bar("checking" if request.dry_run else "retrying") as progress:
        report = run(
            retry_service(
                settings(ctx),
                config(ctx, with_tasks=True),
                request,
                confirm=None if yes else confirm,
                progress=progress,
            )
        )
    if not request.dry_run:
        committed()
    if json:
        _output.emit_json(report.as_dict())
    elif request.ids or request.job is not None:  # named: one verdict line each
        _output.retry_verdicts(report)
    else:
        _output.retry_summary(report)
    if report.dry_run or not report.refused:
        return
    already = [d for d in report.decisions if d.decision == SKIPPED_ALREADY_RETRIED]
    # The exit code depends on the work left, not on who got there first.
    handled_jobs = {d.job_id for d in report.decisions if d.retried} | {d.job_id for d in already}
    done = [d for d in report.decisions if already_done(d, handled_jobs)]
    superseded = sum(1 for d in done if d.decision == SKIPPED_SUPERSEDED)
    bulk = not request.ids and request.job is None
    if bulk and len(done) == report.refused:
        # Story 5: the colleague who runs the same bulk retry a second later is told
        # the work is done; that is success, not "partly done".
        actors = sorted({d.retried_by for d in already if d.retried_by})
        _output.retry_already_done(report.retried, len(already), superseded, actors)
        return
    raise typer.Exit(EXIT_PARTIAL)
