"""``jobsys queues pause|resume``: name what to pause, do it, say what changed.

A name is a queue or a lane (a lane's pause is a pause of each of its queues); a
queue's name wins when a lane has the same name (a capsule serving the queue of its
own name pauses the same queue either way).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobsys import timespec
from jobsys.clock import utc
from jobsys.db.query import columns
from jobsys.errors import UsageError, did_you_mean

if TYPE_CHECKING:
    from datetime import datetime

    from jobsys.config import Config
    from jobsys.settings import Settings

#: What the audit and the pause rows name when every queue was paused at once.
ALL_TARGET = "--all"


def targets(config: Config, name: str | None, *, every: bool) -> tuple[str, list[str]]:
    """(what the operator named, the queues it means); unknown names are a usage error."""
    if every and name is not None:
        raise UsageError(f"give a queue or lane name, or --all, not both (got {name!r} and --all)")
    if every:
        return ALL_TARGET, list(config.all_queues)
    if name is None:
        raise UsageError("name a queue or lane, or give --all", hint="See `jobsys queues`.")
    if name in config.queue_to_lane:
        return name, [name]
    if name in config.lanes:
        return name, list(config.lanes[name].queues)
    names = [*config.all_queues, *(lane for lane in config.lanes if lane not in config.all_queues)]
    raise UsageError(
        f"unknown queue or lane {name!r}{did_you_mean(name, names)}",
        hint="`jobsys queues` lists the queues and their lanes.",
    )


def why_paused(pause: dict[str, Any]) -> str:
    """``queue paused 3m ago by alice: upstream 429 (resumes in 27m)``."""
    text = f"queue paused {timespec.coarse(pause['paused_seconds'])} ago by {pause['paused_by']}"
    if pause.get("target") and pause["target"] != pause["queue"]:
        text += " (all queues)" if pause["target"] == ALL_TARGET else f" (lane {pause['target']})"
    if pause.get("reason"):
        text += f": {pause['reason']}"
    if pause.get("remaining_seconds") is not None:
        text += f" (resumes in {timespec.coarse(pause['remaining_seconds'])})"
    return text


def pause_view(pause: dict[str, Any]) -> dict[str, Any]:
    """A pause as ``queues --json`` and the dashboard show it."""
    return {
        **columns(pause, "paused_at", "paused_by", "reason", "until", "target"),
        "why": why_paused(pause),
    }


async def set_paused(
    settings: Settings,
    config: Config,
    name: str | None,
    *,
    paused: bool,
    every: bool = False,
    for_: str | None = None,
    reason: str | None = None,
) -> dict[str, Any]:
    """Pause or resume what ``name`` (or ``every``) means for every worker; the result
    says which queues changed and which already were in that state."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.flow import store

    if not paused and (for_ is not None or reason is not None):
        raise UsageError("--for and --reason go with pause, not resume")
    for_seconds = timespec.parse_duration(for_, "--for").total_seconds() if for_ else None
    target, queues = targets(config, name, every=every)
    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        before = await store.set_paused(
            conn,
            queues,
            paused=paused,
            actor=settings.operator,
            target=target,
            reason=reason,
            for_seconds=for_seconds,
        )
        pauses = await store.active_pauses(conn, queues)
    unchanged = [q for q in queues if (q in before) == paused]
    return {
        "action": "pause" if paused else "resume",
        "target": target,
        "queues": queues,
        "changed": [q for q in queues if q not in unchanged],
        "unchanged": unchanged,
        "by": settings.operator,
        "reason": reason if paused else None,
        "until": pauses[0]["until"] if paused and pauses else None,
        "paused": {p["queue"]: pause_view(p) for p in pauses},
    }


def scheduled_for(at: datetime) -> str:
    """Why a job due later waits, as ``jobs show --json`` says it (ISO-8601, in UTC
    whatever the session's TimeZone)."""
    return f"scheduled for {utc(at).isoformat()}"


async def why_waiting(conn: Any, config: Config, job: dict[str, Any]) -> str | None:
    """Why a waiting job (``todo``) has not started, in the operator's words; None for a
    job that is not waiting. ``job`` needs queue, scheduled_at and lock."""
    from jobsys.flow import store

    if job["status"] != "todo":
        return None
    lane = config.lanes.get(config.lane_of(job["queue"]) or "")
    if lane is None:
        return f"no lane serves queue {job['queue']}: add it to a lane in queues.yaml"
    pauses = await store.active_pauses(conn, [job["queue"]])
    if pauses:
        return why_paused(pauses[0])
    facts = await store.wait_facts(
        conn,
        scheduled_at=job["scheduled_at"],
        lock=job["lock"],
        lane=lane.name,
        lane_queues=list(lane.queues),
        dead_after_seconds=config.queues.worker.dead_after_seconds,
    )
    if facts["scheduled_later"]:
        return scheduled_for(job["scheduled_at"])
    if facts["lock_holder"] is not None:
        return f"lock {job['lock']!r} is held by running job {facts['lock_holder']}"
    limited = await _why_limited(conn, config, job)
    if limited:
        return limited
    if not facts["lane_processes"]:
        return f"no live worker runs lane {lane.name}: start `jobsys worker --lane {lane.name}`"
    return (
        f"due; waiting for a free slot of lane {lane.name} ({facts['lane_running']} running, "
        f"{facts['lane_processes']} worker process(es) x {lane.concurrency})"
    )


#: ``queues`` looks at this many next due jobs per queue for the keys a limit holds,
#: and names at most this many held keys per queue.
HOLD_SCAN_JOBS = 1_000
HOLD_KEYS_SHOWN = 20


#: A rate's window as its ``N/unit`` writes it.
_UNITS = {1.0: "s", 60.0: "m", 3600.0: "h", 86400.0: "d"}


def why_held(limit: Any, bucket: str, state: dict[str, Any]) -> str | None:
    """``account_id 42 at its limit 2/2 running`` or ``account_id 42: rate 5/s
    reached, next slot in 0.3 s``: why the limit holds the bucket's jobs now (None: it
    does not). ``state`` as jobsys.flow.store.bucket_states reads it."""
    from jobsys.flow.limits import RATE_MARGIN_SECONDS

    who = (
        f"{limit.per_key} {bucket.removeprefix(limit.prefix)}"
        if limit.per_key
        else f"{limit.kind} {limit.target}"
    )
    if limit.concurrency and state["running"] >= limit.concurrency:
        return f"{who} at its limit {state['running']}/{limit.concurrency} running"
    recent = list(state["recent"])
    if limit.rate and len(recent) >= limit.rate[0]:
        count, window = limit.rate
        next_slot = max(recent[len(recent) - count] + window + RATE_MARGIN_SECONDS, 0.0)
        unit = _UNITS.get(window, timespec.coarse(window))
        when = f"{next_slot:.1f} s" if next_slot < 60 else timespec.coarse(next_slot)
        return f"{who}: rate {count}/{unit} reached, next slot in {when}"
    return None


async def _why_limited(conn: Any, config: Config, job: dict[str, Any]) -> str | None:
    """The job's flow limit (queues.yaml ``throttle``) when it holds the job now."""
    from jobsys.flow import limits as flow_limits
    from jobsys.flow import store

    found = flow_limits.bucket_of(
        job["task"], job["queue"], job["args"] or {}, flow_limits.limits_of(config)
    )
    if found is None:
        return None
    limit, bucket = found
    (state,) = await store.bucket_states(conn, [bucket], [limit.window_seconds])
    return why_held(limit, bucket, state)


async def holds_by_queue(
    conn: Any, config: Config, queues: list[str]
) -> dict[str, list[dict[str, Any]]]:
    """Per queue, the keys a flow limit holds now among its next due jobs: each with
    its bucket, how many of those jobs wait in it, and why (:func:`why_held`)."""
    from jobsys.flow import limits as flow_limits
    from jobsys.flow import store

    limits = flow_limits.limits_of(config)
    concerned = [q for q in queues if any(x.kind == "task" or x.target == q for x in limits)]
    if not concerned:
        return {}
    waiting: dict[tuple[str, str], int] = {}  # (queue, bucket) -> jobs
    for key in sorted({x.per_key or "" for x in limits}):
        rows = await store.waiting_keys(
            conn, concerned, key or None, scan=HOLD_SCAN_JOBS, limit=HOLD_SCAN_JOBS
        )
        for row in rows:
            found = flow_limits.bucket_of(
                row["task"], row["queue"], {key: row["key"]} if key else {}, limits
            )
            if found is not None and (found[0].per_key or "") == key:
                slot = (row["queue"], found[1])
                waiting[slot] = waiting.get(slot, 0) + int(row["waiting"])
    by_bucket = {
        b: limit
        for b in sorted({b for _, b in waiting})
        if (limit := flow_limits.limit_of(b, limits))
    }
    buckets = list(by_bucket)
    spans = [by_bucket[b].window_seconds for b in buckets]
    states = {row["bucket"]: row for row in await store.bucket_states(conn, buckets, spans)}
    out: dict[str, list[dict[str, Any]]] = {}
    for (queue, bucket), count in sorted(waiting.items(), key=lambda kv: -kv[1]):
        limit = by_bucket.get(bucket)
        why = why_held(limit, bucket, states[bucket]) if limit else None
        if why is None or len(out.get(queue, [])) >= HOLD_KEYS_SHOWN:
            continue
        out.setdefault(queue, []).append({"bucket": bucket, "waiting": count, "why": why})
    return out


async def pauses_by_queue(conn: Any, queues: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """Pauses in effect, by queue, as :func:`pause_view` shapes them."""
    from jobsys.flow import store

    return {p["queue"]: pause_view(p) for p in await store.active_pauses(conn, queues)}
