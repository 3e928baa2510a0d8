"""The ``jobsys_bulk_actions`` table: the audit row of every bulk action on jobs."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, NowTimestamp, SerialId

BULK_ACTIONS = ("jobs_cancel", "jobs_delete", "queues_purge")
BULK_STATUSES = ("running", "finished")


class BulkAction(Base):
    """Who ran which bulk action, when, with which filter, on how many jobs. Updated in
    each chunk's own transaction, so an interrupted action's row says what it did."""

    __tablename__ = "jobsys_bulk_actions"

    id: Mapped[SerialId]
    action: Mapped[str] = mapped_column(Text)
    actor: Mapped[str] = mapped_column(Text)
    filters: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    #: Jobs the filter matched when the action started.
    matched: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    #: What was done so far, per outcome (cancelled, abort_requested, deleted).
    counts: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status: Mapped[str] = mapped_column(Text, server_default="running")
    started_at: Mapped[NowTimestamp]
    updated_at: Mapped[NowTimestamp]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(f"action IN {BULK_ACTIONS!r}", name="action"),
        CheckConstraint(f"status IN {BULK_STATUSES!r}", name="status"),
        Index("ix_jobsys_bulk_actions_started", text("started_at DESC")),
    )


class UniqueJob(Base):
    """The unique key of a job deferred as unique (``jobsys.jobs.unique``). No foreign
    key to Procrastinate's table: look-ups join it, so the row of a deleted job counts
    for nothing (bulk delete removes it too)."""

    __tablename__ = "jobsys_unique_jobs"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    key: Mapped[str] = mapped_column(Text)
    created_at: Mapped[NowTimestamp]

    __table_args__ = (Index("ix_jobsys_unique_jobs_key", "key", text("job_id DESC")),)
