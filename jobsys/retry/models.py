"""Pipelines, their steps, and the audit of every retry decision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base

PIPELINE_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


class Pipeline(Base):
    __tablename__ = "jobsys_pipelines"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(Text)
    entity: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    args: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), server_default=text("now()")
    )
    updated_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), server_default=text("now()")
    )
    finished_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    cancelled_by: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(f"status IN {PIPELINE_STATUSES!r}", name="status"),
        Index("ix_jobsys_pipelines_status_created", "status", text("created_at DESC")),
    )


class PipelineStep(Base):
    __tablename__ = "jobsys_pipeline_steps"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    pipeline_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobsys_pipelines.id", ondelete="CASCADE")
    )
    step: Mapped[str] = mapped_column(Text)
    stage: Mapped[int]
    task: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(server_default="0")
    updated_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), server_default=text("now()")
    )
    finished_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))

    __table_args__ = (
        CheckConstraint(f"status IN {PIPELINE_STATUSES!r}", name="status"),
        UniqueConstraint("pipeline_id", "step"),
        Index("ix_jobsys_pipeline_steps_job", "job_id"),
    )


class RetryEvent(Base):
    """One row per retry decision: the audit of who retried what, when, and why not."""

    __tablename__ = "jobsys_retry_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    failure_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobsys_failures.id", ondelete="CASCADE")
    )
    job_id: Mapped[int] = mapped_column(BigInteger)
    decision: Mapped[str] = mapped_column(Text)
    new_job_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str] = mapped_column(Text)
    batch_id: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(
        TIMESTAMP(timezone=True), server_default=text("now()")
    )

    __table_args__ = (Index("ix_jobsys_retry_events_failure", "failure_id", "created_at"),)


class OutageReplay(Base):
    """The replay of a resolved ``service_outage`` issue's failures
    (``jobsys.retry.auto``): how far an unfinished one got, how many jobs it retried,
    and when it last went through them all."""

    __tablename__ = "jobsys_outage_replays"

    issue_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobsys_issues.id", ondelete="CASCADE"), primary_key=True
    )
    #: When the replay last went through every failure of the issue (None: not yet).
    replayed_at: Mapped[datetime | None] = mapped_column(TIMESTAMP(timezone=True))
    #: The last failure id an unfinished replay took (None: none in progress).
    cursor: Mapped[int | None] = mapped_column(BigInteger)
    #: Jobs retried by this issue's replays, in all.
    retried: Mapped[int] = mapped_column(BigInteger, server_default="0")


# Indexes the retry pipeline adds to ``jobsys_failures`` (the failures domain owns the
# table; these serve only the retry queries, so they live with them).
from jobsys.failures.models import Failure  # noqa: E402

_failures = Failure.__table__.c
#: The pending retries the automatic retry reconciles every minute (a handful of rows).
Index(
    "ix_jobsys_failures_retry_pending",
    _failures.id,
    postgresql_where=text("(retry_state ->> 'outcome') = 'pending'"),
)
#: Candidates of the automatic retry: final, retryable, transient failures.
Index(
    "ix_jobsys_failures_auto_candidates",
    _failures.occurred_at,
    _failures.id,
    postgresql_where=text("kind = 'transient' AND retryable AND NOT will_retry"),
)
