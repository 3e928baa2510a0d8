"""Schedule state (pause, high-water mark), one row per enqueued or missed tick, fan-out runs."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, text
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, JsonObject, NowTimestamp, Progress, SerialId, one_of
from jobsys.schedule.fanout import FANOUT_STATUSES

#: ``skipped``: a fan-out tick that found the entry's previous run still going (overlap: skip).
TICK_STATUSES = ("enqueued", "missed", "manual", "skipped", "already_queued")


class ScheduleEntryState(Base):
    __tablename__ = "jobsys_schedule_entries"

    name: Mapped[str] = mapped_column(primary_key=True)
    paused: Mapped[bool] = mapped_column(server_default=text("false"))
    paused_at: Mapped[datetime | None]
    paused_by: Mapped[str | None]
    #: The latest tick enqueued or recorded missed; ticks at or before it never run again.
    high_water: Mapped[datetime | None]
    updated_at: Mapped[NowTimestamp]


class ScheduleTick(Base):
    __tablename__ = "jobsys_schedule_ticks"

    name: Mapped[str] = mapped_column(primary_key=True)
    tick_at: Mapped[datetime] = mapped_column(primary_key=True)
    status: Mapped[str]
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    created_at: Mapped[NowTimestamp]

    __table_args__ = (one_of("status", TICK_STATUSES),)


class FanoutRun(Progress, Base):
    __tablename__ = "jobsys_fanout_runs"

    id: Mapped[SerialId]
    entry: Mapped[str]
    tick_at: Mapped[datetime | None]
    status: Mapped[str] = mapped_column(server_default="running")
    source: Mapped[str]
    #: Everything a batch needs (table, id_column, where, item_arg, args, priority), so a
    #: run finishes as it started even if schedule.yaml changes meanwhile.
    spec: Mapped[JsonObject]
    task: Mapped[str]
    queue: Mapped[str]
    batch_size: Mapped[int]
    cursor: Mapped[int | None] = mapped_column(BigInteger)
    batches_done: Mapped[int] = mapped_column(server_default="0")
    items_enqueued: Mapped[int] = mapped_column(BigInteger, server_default="0")
    #: The smallest and largest id of the item jobs enqueued so far: the run counts as
    #: still going (overlap: skip) while one of them is waiting or running.
    first_item_job_id: Mapped[int | None] = mapped_column(BigInteger)
    last_item_job_id: Mapped[int | None] = mapped_column(BigInteger)
    started_at: Mapped[NowTimestamp]

    __table_args__ = (
        one_of("status", FANOUT_STATUSES),
        Index("ix_jobsys_fanout_runs_entry_started", "entry", text("started_at DESC")),
        Index(
            "uq_jobsys_fanout_runs_entry_tick",
            "entry",
            "tick_at",
            unique=True,
            postgresql_where=text("tick_at IS NOT NULL"),
        ),
    )
