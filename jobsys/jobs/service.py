"""``jobsys defer``: parse and validate the operator's input, then defer one job."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobsys import timespec
from jobsys.errors import UsageError
from jobsys.jobs import validate
from jobsys.jobs.unique import unique_spec

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings


async def defer_from_cli(
    settings: Settings,
    config: Config,
    task: str,
    args_text: str,
    *,
    queue: str | None = None,
    in_: str | None = None,
    at: str | None = None,
    lock: str | None = None,
    queueing_lock: str | None = None,
    priority: int | None = None,
    unique_for: str | None = None,
    unique_keys: tuple[str, ...] = (),
) -> dict[str, Any]:
    import psycopg

    from jobsys.db.connect import check_schema, connect, lost, resolve
    from jobsys.jobs import defer

    if in_ is not None and at is not None:
        raise UsageError("give --in or --at, not both")
    args = validate.parse_json_args(args_text)
    schedule_in = (
        timespec.parse_duration(in_, "--in", unit_required=False, allow_zero=True)
        if in_ is not None
        else None
    )
    schedule_at = timespec.parse_iso(at, "--at") if at is not None else None
    unique = unique_spec(unique_for, unique_keys, where="--unique-for")
    planned = defer.plan(
        config,
        task,
        [args],
        queue=queue,
        schedule_at=schedule_at,
        schedule_in=schedule_in,
        lock=lock,
        queueing_lock=queueing_lock,
        priority=priority,
        unique=unique,
    )
    url = resolve(settings, config).url
    async with connect(url) as conn:
        await check_schema(conn)
        try:
            [(job_id, duplicate)] = await defer.insert_with_outcome(conn, planned)
        except psycopg.OperationalError as exc:
            if not (conn.broken or conn.closed):
                raise
            # Sent, then lost: the server may have committed it (not "cannot connect").
            raise lost(exc, url, during="while deferring", hint=defer.lost_hint(planned)) from None
    job = planned[0]
    return {
        "job_id": job_id,
        "duplicate": duplicate,
        "task": job.task,
        "queue": job.queue,
        "lane": config.lane_of(job.queue),
        "scheduled_at": job.scheduled_at,
        "lock": job.lock,
        "queueing_lock": job.queueing_lock,
        "priority": job.priority,
    }
