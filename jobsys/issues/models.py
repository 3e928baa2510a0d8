"""The ``jobsys_issues`` table and the accounts each issue affected."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, text
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, JsonObject, NowTimestamp, SerialId, one_of

ISSUE_KINDS = ("job_failure", "queue_health", "service_outage", "schedule_entry")
ISSUE_STATUSES = ("open", "resolved", "muted")


class Issue(Base):
    __tablename__ = "jobsys_issues"

    id: Mapped[SerialId]
    fingerprint: Mapped[str] = mapped_column(unique=True)
    kind: Mapped[str]
    title: Mapped[str]
    status: Mapped[str] = mapped_column(server_default="open")
    muted_until: Mapped[datetime | None]
    first_seen: Mapped[NowTimestamp]
    last_seen: Mapped[NowTimestamp]
    occurrences: Mapped[int] = mapped_column(BigInteger, server_default="0")
    affected_accounts: Mapped[int] = mapped_column(server_default="0")
    latest_failure_id: Mapped[int | None] = mapped_column(BigInteger)
    regression: Mapped[bool] = mapped_column(server_default=text("false"))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None]
    task: Mapped[str | None]
    error_class: Mapped[str | None]
    queue: Mapped[str | None]
    service: Mapped[str | None]
    details: Mapped[JsonObject]

    __table_args__ = (
        one_of("kind", ISSUE_KINDS),
        one_of("status", ISSUE_STATUSES),
        Index("ix_jobsys_issues_status_last_seen", "status", text("last_seen DESC")),
        Index("ix_jobsys_issues_kind_status", "kind", "status"),
    )


class IssueAccount(Base):
    """Which accounts an issue touched; inserting a new pair bumps ``affected_accounts``."""

    __tablename__ = "jobsys_issue_accounts"

    issue_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobsys_issues.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(primary_key=True)
