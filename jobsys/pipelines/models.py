"""The pipelines domain's tables: a pipeline and its steps."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, JsonObject, NowTimestamp, Progress, SerialId, one_of
from jobsys.pipelines.definitions import PIPELINE_STATUSES, TERMINAL_STATUSES

__all__ = ["PIPELINE_STATUSES", "TERMINAL_STATUSES", "Pipeline", "PipelineStep"]


class Pipeline(Progress, Base):
    __tablename__ = "jobsys_pipelines"

    id: Mapped[SerialId]
    name: Mapped[str]
    entity: Mapped[str | None]
    status: Mapped[str] = mapped_column(server_default="pending")
    args: Mapped[JsonObject]
    created_at: Mapped[NowTimestamp]
    cancelled_by: Mapped[str | None]

    __table_args__ = (
        one_of("status", PIPELINE_STATUSES),
        Index("ix_jobsys_pipelines_status_created", "status", text("created_at DESC")),
    )


class PipelineStep(Progress, Base):
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

    __table_args__ = (
        one_of("status", PIPELINE_STATUSES),
        UniqueConstraint("pipeline_id", "step"),
        Index("ix_jobsys_pipeline_steps_job", "job_id"),
    )
