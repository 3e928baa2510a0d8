"""What a retry of one failure would do now, read and never written: ``failures show``
and the dashboard's failure detail ask it.

Apart from ``service`` because a read command must not load what retrying needs
(``retry.engine`` and Procrastinate behind it): ``tests/integration/test_read_startup.py``
holds every read command to that.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobsys.retry import store
from jobsys.retry.rules import Decision

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings


async def failure_verdict(
    settings: Settings, config: Callable[[], Config], failure_id: int
) -> tuple[dict[str, Any], dict[str, Any], Decision | None]:
    """What ``failures show`` says of one failure, read on one connection; nothing is
    written: the failure (as ``failures.service.show_failure``), then its retry state as
    true now (``rules.state_now``, its job and the job's failures read now), then the
    refusal any ``jobsys retry`` of it would get (``rules.refusal_known``, as the web
    console's failure page tells it: authentication, the job succeeded since, already
    retried, superseded...), None when the rules refuse nothing these tell (the retry's
    dry run checks the rest). ``config`` as ``failures show`` loads it (only asked when
    no URL is given)."""
    from jobsys.db.session import command_connection
    from jobsys.failures.service import read_failure
    from jobsys.retry.rules import failed_again_after, refusal_known, state_now

    async with command_connection(settings, config) as conn:
        failure = await read_failure(conn, failure_id)
        job_id = int(failure["job_id"])
        job = (await store.load_jobs(conn, [job_id], lock=False)).get(job_id)
        rows = await store.job_failure_rows(conn, job_id)
    status = job["status"] if job else None
    state = failure.get("retry_state") or {}
    again = failed_again_after(int(failure["id"]), rows)
    now = state_now(state, status, failed_again_since=again) if state else {}
    return failure, now, refusal_known(failure, status, rows)
