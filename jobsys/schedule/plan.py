"""The schedule as the scheduler runs it: ``schedule.yaml`` entries resolved against the
task registry (queue and priority defaults) into frozen :class:`PlannedEntry` objects.

Pure: no I/O. Building a plan from a :class:`~jobsys.config.Config` that ``load_config``
accepted cannot fail; a plan is replaced whole or not at all.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobsys import cron
from jobsys import tasks as task_registry
from jobsys.config.loader import SCHEDULE_FILE
from jobsys.jobs.unique import UniqueSpec, unique_spec
from jobsys.schedule.fanout import BATCH_TASK, FanoutSource, Overlap

if TYPE_CHECKING:
    from jobsys.config import Config

#: Missed ticks recorded one by one after downtime; older ones are only counted in logs.
MAX_RECORDED_MISSED_TICKS = 10_000


@dataclass(frozen=True)
class FanoutPlan:
    source: FanoutSource
    batch_size: int
    task: str
    queue: str
    priority: int
    item_arg: str
    args: dict[str, Any]
    overlap: Overlap
    batch_queue: str | None = None
    #: The entry's ``unique_for`` (None: the per-item task's own, if it has one).
    unique: UniqueSpec | None = None


@dataclass(frozen=True)
class PlannedEntry:
    name: str
    cron: str
    timezone: str
    #: The task run at each tick; for a fan-out, the per-item task.
    task: str
    queue: str
    priority: int
    args: dict[str, Any] = field(default_factory=dict)
    enabled: bool = True
    description: str = ""
    fanout: FanoutPlan | None = None

    @property
    def tz(self) -> tzinfo:
        return cron.timezone_of(self.timezone)

    def next_fire(self, after: datetime) -> datetime:
        return cron.next_fire(self.cron, after, self.tz)

    @property
    def job_task(self) -> str:
        """The task of the job a tick enqueues."""
        return BATCH_TASK if self.fanout else self.task


@dataclass(frozen=True)
class Schedule:
    entries: dict[str, PlannedEntry]
    catch_up: int = 1
    max_missed: int = MAX_RECORDED_MISSED_TICKS
    #: The schedule.yaml it came from (for located error messages).
    source_file: Path | None = None

    @property
    def active(self) -> list[PlannedEntry]:
        return [e for e in self.entries.values() if e.enabled]


def _task_defaults(name: str) -> tuple[str | None, int]:
    spec = task_registry.get(name)
    return (spec.queue, spec.priority) if spec else (None, 0)


def build(config: Config) -> Schedule:
    """The plan of ``config`` (tasks must be imported: ``config.application.load_config``)."""
    entries = {}
    for name, entry in config.schedule.entries.items():
        tz = config.schedule_timezone(entry)
        fanout = None
        if entry.fanout is not None:
            f = entry.fanout
            item_queue, item_priority = _task_defaults(f.task)
            fanout = FanoutPlan(
                source=FanoutSource(f.table, f.id_column, f.where),
                batch_size=f.batch_size,
                task=f.task,
                queue=f.queue or item_queue or "default",
                priority=entry.priority if entry.priority is not None else item_priority,
                item_arg=f.item_arg,
                args=dict(f.args),
                overlap=f.overlap,
                batch_queue=f.batch_queue,
                unique=unique_spec(
                    f.unique_for, f.unique_keys, f.unique_states, where=f"{name}.fanout.unique_for"
                ),
            )
            task, queue, priority = f.task, fanout.queue, fanout.priority
        else:
            assert entry.task is not None, "validated: an entry has a task or a fanout"
            task_queue, task_priority = _task_defaults(entry.task)
            task = entry.task
            queue = entry.queue or task_queue or "default"
            priority = entry.priority if entry.priority is not None else task_priority
        entries[name] = PlannedEntry(
            name=name,
            cron=entry.cron,
            timezone=tz,
            task=task,
            queue=queue,
            priority=priority,
            args=dict(entry.args),
            enabled=entry.enabled,
            description=entry.description,
            fanout=fanout,
        )
    return Schedule(
        entries=entries,
        catch_up=config.schedule.defaults.catch_up,
        source_file=config.directory / SCHEDULE_FILE,
    )
