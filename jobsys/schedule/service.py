"""Operator services behind ``jobsys schedule ...`` and ``jobsys fanout ...``.

Each function loads the configuration, validates its input before touching the
database, does one thing, and returns plain data (dicts) for the CLI to render.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from jobsys.db.query import columns
from jobsys.errors import (
    ConfigError,
    JobsysError,
    UsageError,
    not_found,
    suggestion,
    unchanged,
)

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.schedule.plan import PlannedEntry, Schedule
    from jobsys.settings import Settings

DEFAULT_RUN_LIMIT = 50


def _plan(config: Config) -> Schedule:
    """The schedule of ``config`` (loaded by the edge with the application's tasks)."""
    from jobsys.schedule.plan import build

    return build(config)


@contextlib.asynccontextmanager
async def _database(settings: Settings, config: Config) -> AsyncIterator[Any]:
    from jobsys.db.connect import check_schema, connect, resolve

    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        yield conn


def entry_named(schedule: Schedule, name: str) -> PlannedEntry:
    """The entry called ``name``, or a usage error listing the close names."""
    entry = schedule.entries.get(name)
    if entry is not None:
        return entry
    names = sorted(schedule.entries)
    hint = suggestion(name, names) or ""
    raise UsageError(
        f"no schedule entry named {name!r}.",
        hint=f"{hint} Entries: {', '.join(names) or '(none)'}.".strip(),
    )


def _outcome(tick: dict[str, Any] | None) -> str | None:
    if tick is None:
        return None
    if tick["status"] == "skipped":
        return "skipped"
    if tick["run_status"] is not None:
        return f"run {tick['run_status']}"
    if tick["job_id"] is None:
        return tick["status"]
    return tick["job_status"] or "job deleted"


async def list_entries(settings: Settings, config: Config) -> list[dict[str, Any]]:
    """Every entry of schedule.yaml with its state: paused, next run, last run."""
    from jobsys.schedule import store

    schedule = _plan(config)
    names = sorted(schedule.entries)
    async with _database(settings, config) as conn:
        states = {row["name"]: row for row in await store.read_entries(conn, names)}
        last = await store.last_ticks(conn, names)
        missed = await store.missed_counts(conn, names)
        now = await store.db_now(conn)
        problems = {p.entry: p.line for p in await _source_problems(conn, schedule)}
    rows = []
    for name in names:
        entry = schedule.entries[name]
        state = states.get(name) or {}
        paused = bool(state.get("paused", False))
        tick = last.get(name)
        next_run = None
        if entry.enabled and not paused:
            next_run = entry.next_fire(max(now, state.get("high_water") or now))
        rows.append(
            {
                "name": name,
                "cron": entry.cron,
                "timezone": entry.timezone,
                "task": entry.task,
                "queue": entry.queue,
                "fanout": entry.fanout.source.describe() if entry.fanout else None,
                "enabled": entry.enabled,
                "paused": paused,
                "paused_by": state.get("paused_by"),
                "paused_at": state.get("paused_at"),
                "next_run_at": next_run,
                "last_run_at": tick["tick_at"] if tick else None,
                "last_status": _outcome(tick),
                "last_job_id": tick["job_id"] if tick else None,
                "last_run_id": tick["run_id"] if tick else None,
                "missed": missed.get(name, 0),
                "description": entry.description,
                # A fan-out source the scheduler cannot serve (its table missing: the
                # entry is set aside until it exists).
                "problem": problems.get(name),
            }
        )
    return rows


async def _source_problems(conn: Any, schedule: Schedule) -> list[Any]:
    from jobsys.schedule.sources import source_problems_of

    if not any(e.fanout for e in schedule.entries.values()):
        return []
    return await source_problems_of(conn, schedule)


async def run_entry(settings: Settings, config: Config, name: str) -> dict[str, Any]:
    """Enqueue ``name`` now, once (a ``manual`` tick at the database's now).

    A fan-out goes through its entry's ``overlap`` policy exactly as a scheduled tick
    does. ``status``: ``enqueued`` (a job), ``already_queued`` (a unique task's job that
    still counts: ``job_id`` is that job, nothing was enqueued), ``started`` or ``queued``
    (a fan-out run), or ``skipped``: the run ``blocked_by`` is still going; nothing was
    written (the CLI exits 2, a refusal)."""
    import psycopg

    from jobsys.schedule import store
    from jobsys.schedule.scheduler import fire

    schedule = _plan(config)
    entry = entry_named(schedule, name)
    async with _database(settings, config) as conn, conn.transaction():
        fired = await fire(conn, entry, await store.db_now(conn), status="manual")
        if fired.status == "duplicate":
            # The database's now fell exactly on a scheduled tick that is already claimed.
            raise JobsysError(
                f"{name} already has a tick at {fired.tick_at.isoformat()}.",
                hint="Run the command again.",
            )
        if fired.status == "skipped":
            # Roll back: a refused manual run leaves no tick behind.
            raise psycopg.Rollback()
    if entry.fanout is None:
        status = "already_queued" if fired.already_queued else "enqueued"
    elif fired.status == "skipped":
        status = "skipped"
    else:
        status = "queued" if fired.run_status == "queued" else "started"
    return {
        "name": name,
        "status": status,
        "tick_at": fired.tick_at,
        "job_id": fired.job_id,
        "task": entry.job_task,
        "queue": entry.queue,
        "run_id": None if status == "skipped" else fired.run_id,
        "run_status": fired.run_status,
        "overlap": entry.fanout.overlap if entry.fanout else None,
        "blocked_by": fired.blocked_by,
        "blocked_by_items_pending": fired.items_pending,
    }


async def set_paused(settings: Settings, config: Config, name: str, paused: bool) -> dict[str, Any]:
    """Pause or resume ``name`` for every scheduler (persisted in the database)."""
    from jobsys.schedule import store

    schedule = _plan(config)
    entry_named(schedule, name)
    async with _database(settings, config) as conn:
        row = await store.set_paused(conn, name, paused, settings.operator)
    return {
        "name": name,
        "paused": row["paused"],
        "paused_at": row["paused_at"],
        "paused_by": row["paused_by"],
        "changed": row["changed"],
    }


def paused_note(result: dict[str, Any]) -> str:
    """What ``schedule pause`` / ``resume`` did, for a human (the CLI, the web console
    and the dashboard); when the entry was so already, that and who paused it
    (:func:`jobsys.errors.unchanged`): a second operator's pause does not take it over."""
    name = result["name"]
    if result["changed"]:
        if result["paused"]:
            return f"{name} paused; ticks are not enqueued until it is resumed"
        return f"{name} resumed"
    if not result["paused"]:
        return unchanged(name, "not paused")
    who = f"by {result['paused_by']}" if result["paused_by"] else None
    return unchanged(name, "already paused", who=who, at=result["paused_at"])


async def check(settings: Settings, config: Config) -> dict[str, Any]:
    """The schedule part of ``config check`` plus, when the database answers, the
    fan-out sources. Raises :class:`ConfigError` with every problem; a source table
    that does not exist yet is a warning (``warnings``), not a problem."""
    schedule = _plan(config)
    problems, warnings, checked = await source_check(settings, config, schedule)
    if problems:
        raise ConfigError(problems, hint="Fix schedule.yaml, then run `jobsys schedule check`.")
    return {
        "ok": True,
        "entries": sorted(schedule.entries),
        "fanout_sources_checked": checked,
        "problems": [],
        "warnings": warnings,
    }


async def config_source_check(
    settings: Settings, config: Config
) -> tuple[list[str], list[str], bool]:
    """:func:`source_check` for a loaded configuration (``jobsys config check``)."""
    from jobsys.schedule.plan import build

    return await source_check(settings, config, build(config))


async def source_check(
    settings: Settings, config: Config, schedule: Schedule
) -> tuple[list[str], list[str], bool]:
    """Fan-out source ``(problems, warnings, checked)``: warnings name source tables
    that do not exist yet (the scheduler waits for them); not checked when no database
    answers (``config check`` runs in pipelines without one). The database is the one
    every command uses (flag, environment, then ``database.url`` in queues.yaml); the
    sources are the application's tables, so jobsys's schema need not be installed yet.
    Never starts a server."""
    from jobsys.db.connect import connect, resolve
    from jobsys.schedule.sources import source_problems_of

    if not any(e.fanout for e in schedule.entries.values()):
        return [], [], True
    try:
        target = resolve(settings, config, start=False)
        async with connect(target.url) as conn:
            found = await source_problems_of(conn, schedule)
    except JobsysError:
        return [], [], False
    warnings = [
        f"{p.line} (the entry waits for it: the scheduler skips it until it exists)"
        for p in found
        if p.waiting_for_table
    ]
    return [p.line for p in found if not p.waiting_for_table], warnings, True


def _run_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **columns(
            row,
            "id",
            "entry",
            "status",
            "tick_at",
            "source",
            "task",
            "queue",
            "batch_size",
            "batches_done",
            "items_enqueued",
            "cursor",
            "started_at",
            "finished_at",
        ),
        "duration_seconds": row["duration"].total_seconds() if row["duration"] else None,
    }


async def list_runs(
    settings: Settings,
    config: Config,
    *,
    entry: str | None = None,
    status: str | None = None,
    limit: int = DEFAULT_RUN_LIMIT,
) -> list[dict[str, Any]]:
    from jobsys.schedule import fanout_store
    from jobsys.schedule.fanout import FANOUT_STATUSES

    if status is not None and status not in FANOUT_STATUSES:
        raise UsageError(
            f"unknown fan-out status {status!r}.", hint=f"Use one of: {', '.join(FANOUT_STATUSES)}."
        )
    if limit < 1:
        raise UsageError("--limit must be at least 1.")
    async with _database(settings, config) as conn:
        rows = await fanout_store.list_runs(conn, entry=entry, status=status, limit=limit)
    return [_run_row(r) for r in rows]


def _progress(status: str, enqueued: int, remaining: int | None) -> float | None:
    """How far a run has enqueued, in percent of its rows (those enqueued plus those
    left after the cursor, read now): "how far has it come" at 200,000 accounts reads
    better as 12.5 than as two counts. Unknown (None) for a run that stopped early."""
    if status == "finished":
        return 100.0
    if remaining is None:
        return None
    total = enqueued + remaining
    return round(100.0 * enqueued / total, 1) if total else 100.0


async def show_run(settings: Settings, config: Config, run_id: int) -> dict[str, Any]:
    from jobsys.schedule import fanout_store

    async with _database(settings, config) as conn:
        row = await fanout_store.get_run(conn, run_id)
        if row is None:
            raise not_found("fan-out run", run_id, listed_by="jobsys fanout list")
        left = None
        if row["status"] in ("running", "queued"):
            left = await fanout_store.remaining(conn, row["spec"], row["cursor"])
        # A finished run still holds its entry's next run back (overlap: skip) while
        # any of these is waiting or running: the number `schedule run` refers to.
        pending = await fanout_store.pending_items(conn, run_id)
    from jobsys.failures.redaction import Redactor

    data = _run_row(row)
    data["remaining"] = left
    data["progress_percent"] = _progress(data["status"], data["items_enqueued"], left)
    data["items_pending"] = pending
    data["spec"] = Redactor.for_config(config).redact(row["spec"])
    return data
