"""Operator-level entry points of the lanes domain: ``jobsys worker`` and ``jobsys queues``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from jobsys.errors import ConfigError, UsageError, did_you_mean

if TYPE_CHECKING:
    from jobsys.config import Config, LaneSpec
    from jobsys.settings import Settings


def select_lanes(config: Config, names: list[str] | None) -> list[LaneSpec]:
    """The lanes named (all when none), in config order; unknown names are an error."""
    if not names:
        return list(config.lanes.values())
    unknown = [n for n in names if n not in config.lanes]
    if unknown:
        hints = [f"{name!r}{did_you_mean(name, config.lanes, n=1)}" for name in unknown]
        raise UsageError(
            f"unknown lane {', '.join(hints)}",
            hint="Lanes: " + ", ".join(config.lanes) + ".",
        )
    return [lane for name, lane in config.lanes.items() if name in names]


def under_systemd(
    exc: ConfigError, lanes: list[str] | None, env: dict[str, str] | None = None
) -> ConfigError:
    """``exc``, telling a worker run by systemd how to get its unit back: the unit is
    not restarted on exit 2 (``RestartPreventExitStatus=2``)."""
    env = dict(os.environ) if env is None else env
    if "INVOCATION_ID" not in env and "NOTIFY_SOCKET" not in env:
        return exc
    unit = f"jobsys-worker@{lanes[0]}" if lanes and len(lanes) == 1 else "<unit>"
    hint = (
        f"{exc.hint or ''} systemd does not restart this unit on a configuration error "
        f"(exit 2): fix the files, run `jobsys config check`, then "
        f"`systemctl reset-failed {unit} && systemctl start {unit}`."
    ).strip()
    return ConfigError(exc.problems, hint=hint, runs_check=True)


async def queue_overview(settings: Settings, config: Config) -> list[dict[str, Any]]:
    """Every configured queue: lane, concurrency, waiting, running, failures, oldest
    wait, the pause in effect on it (None when it is not paused), and the keys a flow
    limit holds among its next due jobs (``held``: bucket, waiting, why). ``config``
    with the application's tasks when they load
    (``config.application.load_config_tasks_if_they_load``): their own flow limits
    explain holds too."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.flow.service import holds_by_queue, pauses_by_queue
    from jobsys.lanes import store

    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        rows = await store.queue_overview(conn, list(config.all_queues))
        pauses = await pauses_by_queue(conn, list(config.all_queues))
        holds = await holds_by_queue(conn, config, list(config.all_queues))
    out = []
    for row in rows:
        lane = config.lanes[config.queue_to_lane[row["queue"]]]
        wait = row["oldest_wait_seconds"]
        out.append(
            {
                "queue": row["queue"],
                "lane": lane.name,
                "concurrency": lane.concurrency,
                "waiting": int(row["waiting"]),
                "scheduled": int(row["scheduled"]),
                "running": int(row["running"]),
                "failed_last_hour": int(row["failed_last_hour"]),
                "oldest_wait_seconds": None if wait is None else round(max(float(wait), 0.0), 3),
                "pause": pauses.get(row["queue"]),
                "held": holds.get(row["queue"], []),
            }
        )
    return out
