"""The pipelines domain's tables: a pipeline and its steps."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Text, UniqueConstraint, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, NowTimestamp, SerialId
from jobsys.pipelines.definitions import PIPELINE_STATUSES, TERMINAL_STATUSES

__all__ = ["PIPELINE_STATUSES", "TERMINAL_STATUSES", "Pipeline", "PipelineStep"]


class Pipeline(Base):
    __tablename__ = "jobsys_pipelines"

    id: Mapped[SerialId]
    name: Mapped[str] = mapped_column(Text)
    entity: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    args: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    created_at: Mapped[NowTimestamp]
    updated_at: Mapped[NowTimestamp]
    finished_at: Mapped[datetime | None]
    cancelled_by: Mapped[str | None] = mapped_column(Text)

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
    step: Mapped[str] = mapped_column(Text)
    stage: Mapped[int]
    task: Mapped[str] = mapped_column(Text)
    queue: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="pending")
    job_id: Mapped[int | None] = mapped_column(BigInteger)
    attempts: Mapped[int] = mapped_column(server_default="0")
    updated_at: Mapped[NowTimestamp]
    finished_at: Mapped[datetime | None]

    __table_args__ = (
        CheckConstraint(f"status IN {PIPELINE_STATUSES!r}", name="status"),
        UniqueConstraint("pipeline_id", "step"),
        Index("ix_jobsys_pipeline_steps_job", "job_id"),
    )
