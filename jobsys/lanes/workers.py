"""``jobsys workers``: every worker process, its lanes, heartbeat, running jobs, state.

A process's state comes from its row and the database clock: ``running`` and
``draining`` are what its heartbeat last wrote, as long as that beat is younger than
``worker.dead_after_seconds``; older, it is ``dead`` (whether or not a reaper has
marked it yet: from then on its jobs may be recovered). ``fenced`` is written by the
process's own last beat when it found its lanes taken for dead (it exits at once), or,
when its lease ran out with the database unreachable, by the next worker process of
the same home (``jobsys.lanes.fence_notes``); ``stopped`` is a clean exit.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobsys.errors import UsageError, not_found

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings

#: Ended processes (dead, fenced, stopped) stay in ``workers list`` this long.
ENDED_WITHIN_SECONDS = 24 * 3600
#: Failures listed by ``workers show`` (newest first).
SHOW_FAILURES = 10
#: States a listing can be narrowed to.
STATES = ("running", "draining", "fenced", "dead", "stopped")


def none_in_state(every: bool, states: tuple[str, ...]) -> str | None:
    """What an empty listing filtered by state means (the CLI and the web console): none
    in that state, not that no worker runs ('start one' would send the operator off while
    a worker is running). None without a state filter."""
    if not states:
        return None
    scope = "" if every else " among those live or ended in the last day (--all: every one)"
    return f"no {' or '.join(states)} worker process{scope}"


def state_of(status: str, heartbeat_age_seconds: float, dead_after_seconds: float) -> str:
    """What a process is now, from its row and how old its last beat is. Pure."""
    if status in ("running", "draining") and heartbeat_age_seconds > dead_after_seconds:
        return "dead"
    return status


def describe(
    row: dict[str, Any], running: list[dict[str, Any]], dead_after_seconds: float
) -> dict[str, Any]:
    """One process as ``workers list``/``show`` report it (snake_case, JSON-ready)."""
    age = max(float(row["heartbeat_age_seconds"]), 0.0)
    state = state_of(row["status"], age, dead_after_seconds)
    concurrency = {str(k): int(v) for k, v in (row["concurrency"] or {}).items()}
    return {
        "id": row["id"],
        "host": row["host"],
        "pid": int(row["pid"]),
        "lanes": list(row["lanes"]),
        "concurrency": concurrency,
        "slots": sum(concurrency.values()) if concurrency else None,
        "state": state,
        "started_at": row["started_at"],
        "last_heartbeat_at": row["last_heartbeat"],
        "heartbeat_age_seconds": round(age, 3),
        "stopped_at": row["stopped_at"],
        "running_jobs": [
            {
                "id": int(j["id"]),
                "task": j["task"],
                "queue": j["queue"],
                "running_seconds": None
                if j["running_seconds"] is None
                else round(max(float(j["running_seconds"]), 0.0), 3),
                "abort_requested": bool(j["abort_requested"]),
            }
            for j in running
        ],
    }


async def list_workers(
    settings: Settings, config: Config, *, every: bool = False, states: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """Live processes and those that ended in the last day (``every``: all of them)."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.lanes import store

    unknown = [s for s in states if s not in STATES]
    if unknown:
        raise UsageError(
            f"--state {unknown[0]!r} is not a worker state.", hint=f"Use {', '.join(STATES)}."
        )
    dead_after = config.queues.worker.dead_after_seconds
    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        rows = await store.worker_processes(
            conn, every=every, ended_within_seconds=ENDED_WITHIN_SECONDS
        )
        running = await store.running_on_processes(conn, [r["id"] for r in rows])
    by_process: dict[str, list[dict[str, Any]]] = {}
    for job in running:
        by_process.setdefault(job["process_id"], []).append(job)
    out = [describe(r, by_process.get(r["id"], []), dead_after) for r in rows]
    return [w for w in out if not states or w["state"] in states]


async def show_worker(settings: Settings, config: Config, ref: str) -> dict[str, Any]:
    """One process by its id, or by a prefix of it such as ``host:pid``; with its
    running jobs and the failed attempts it ran."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.lanes import store

    ref = ref.strip()
    if not ref:
        raise UsageError("give a worker id (see `jobsys workers list`), or host:pid.")
    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        rows = await store.worker_processes_by_ref(conn, ref)
        if not rows:
            raise not_found("worker process", repr(ref), listed_by="jobsys workers list --all")
        if len(rows) > 1:
            raise UsageError(
                f"{ref!r} matches {len(rows)} worker processes: "
                + ", ".join(r["id"] for r in rows[:5])
                + ".",
                hint="Give the whole id.",
            )
        (row,) = rows
        running = await store.running_on_processes(conn, [row["id"]])
        failures = await store.failures_of_process(conn, row, SHOW_FAILURES)
    worker = describe(row, running, config.queues.worker.dead_after_seconds)
    worker["recent_failures"] = failures
    return worker
