"""The ``jobsys_failures`` table: one row per failed attempt."""

from __future__ import annotations

from sqlalchemy import BigInteger, ForeignKey, Index, UniqueConstraint, text
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, JsonObject, NowTimestamp, SerialId, one_of

KINDS = ("authentication", "transient", "runtime")
REASONS = ("exception", "timeout", "worker_lost", "task_not_found", "aborted")


class Failure(Base):
    __tablename__ = "jobsys_failures"

    id: Mapped[SerialId]
    job_id: Mapped[int] = mapped_column(BigInteger)
    task: Mapped[str]
    queue: Mapped[str]
    lane: Mapped[str | None]
    attempt: Mapped[int] = mapped_column(default=1)
    args: Mapped[JsonObject]
    error_class: Mapped[str]
    message: Mapped[str] = mapped_column(server_default="")
    traceback: Mapped[str | None]
    account_id: Mapped[str | None]
    profile_id: Mapped[str | None]
    kind: Mapped[str]
    reason: Mapped[str] = mapped_column(server_default="exception")
    retryable: Mapped[bool]
    will_retry: Mapped[bool] = mapped_column(server_default=text("false"))
    worker: Mapped[str | None]
    #: The host and pid of the process that ran the attempt (``jobsys workers show``).
    host: Mapped[str | None]
    pid: Mapped[int | None]
    service: Mapped[str | None]
    fingerprint: Mapped[str | None]
    issue_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("jobsys_issues.id", ondelete="SET NULL")
    )
    pipeline_step_id: Mapped[int | None] = mapped_column(
        BigInteger, ForeignKey("jobsys_pipeline_steps.id", ondelete="SET NULL")
    )
    retry_state: Mapped[JsonObject]
    occurred_at: Mapped[NowTimestamp]

    __table_args__ = (
        one_of("kind", KINDS),
        one_of("reason", REASONS),
        # One row per attempt: capture and reconciliation may both try to write it.
        UniqueConstraint("job_id", "attempt"),
        Index("ix_jobsys_failures_occurred", text("occurred_at DESC"), text("id DESC")),
        Index("ix_jobsys_failures_kind_occurred", "kind", text("occurred_at DESC")),
        Index("ix_jobsys_failures_task_occurred", "task", text("occurred_at DESC")),
        Index("ix_jobsys_failures_queue_occurred", "queue", text("occurred_at DESC")),
        Index("ix_jobsys_failures_account_occurred", "account_id", text("occurred_at DESC")),
        Index("ix_jobsys_failures_issue_occurred", "issue_id", text("occurred_at DESC")),
        # A kind paired with a queue, task or lane (0016): the matching rows only, in
        # the list's order, however rare the pair.
        *(
            Index(
                f"ix_jobsys_failures_{column}_kind_occurred",
                column,
                "kind",
                text("occurred_at DESC"),
                text("id DESC"),
            )
            for column in ("queue", "task", "lane")
        ),
        Index("ix_jobsys_failures_job", "job_id"),
        # `failures list --profile/--lane` stay index scans at millions of rows (0003).
        Index("ix_jobsys_failures_profile_occurred", "profile_id", text("occurred_at DESC")),
        Index("ix_jobsys_failures_lane_occurred", "lane", text("occurred_at DESC")),
        # `failures list --error TEXT`: ILIKE '%text%' on either column, by trigrams (0009).
        Index(
            "ix_jobsys_failures_message_trgm",
            "message",
            postgresql_using="gin",
            postgresql_ops={"message": "gin_trgm_ops"},
        ),
        Index(
            "ix_jobsys_failures_error_class_trgm",
            "error_class",
            postgresql_using="gin",
            postgresql_ops={"error_class": "gin_trgm_ops"},
        ),
    )
