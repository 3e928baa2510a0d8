"""The pipelines domain's tables: a pipeline and its steps."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, JsonObject, NowTimestamp, SerialId
from jobsys.pipelines.definitions import PIPELINE_STATUSES, TERMINAL_STATUSES

__all__ = ["PIPELINE_STATUSES", "TERMINAL_STATUSES", "Pipeline", "PipelineStep"]


class Pipeline(Base):
    __tablename__ = "jobsys_pipelines"

    id: Mapped[SerialId]
    name: Mapped[str]
    entity: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default="pending")
    args: Mapped[JsonObject]
    created_at: Mapped[NowTimestamp]
    updated_at: Mapped[NowTimestamp]
    finished_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None]

    __table_args__ = (
        CheckConstraint(f"status IN {PIPELINE_STATUSES!r}", name="status"),
        Index("ix_jobsys_pipelines_status_created", "status", text("created_at DESC")),
    )


class PipelineStep(Base):
    __tablename__ = "jobsys_pipeline_steps"

    id: Mapped[SerialId]
    pipeline_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobsys_pipelines.id", ondelete="CASCADE")
    )
    step: Mapped[str]
    stage: Mapped[int]
    task: Mapped[str]
    queue: Mapped[str]
    status: Mapped[str] = mapped_column(server_default="pending")
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(server_default="0")
    updated_at: Mapped[NowTimestamp]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(f"status IN {PIPELINE_STATUSES!r}", name="status"),
        UniqueConstraint("pipeline_id", "step"),
        Index("ix_jobsys_pipeline_steps_job", "job_id"),
    )
