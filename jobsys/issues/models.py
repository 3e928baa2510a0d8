"""The ``jobsys_issues`` table and the accounts each issue affected."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, CheckConstraint, ForeignKey, Index, Text, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, NowTimestamp, SerialId

ISSUE_KINDS = ("job_failure", "queue_health", "service_outage", "schedule_entry")
ISSUE_STATUSES = ("open", "resolved", "muted")


class Issue(Base):
    __tablename__ = "jobsys_issues"

    id: Mapped[SerialId]
    fingerprint: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(Text)
    title: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default="open")
    muted_until: Mapped[datetime | None]
    first_seen: Mapped[NowTimestamp]
    last_seen: Mapped[NowTimestamp]
    occurrences: Mapped[int] = mapped_column(BigInteger, server_default="0")
    affected_accounts: Mapped[int] = mapped_column(server_default="0")
    latest_failure_id: Mapped[int | None] = mapped_column(BigInteger)
    regression: Mapped[bool] = mapped_column(server_default=text("false"))
    resolved_at: Mapped[datetime | None]
    resolved_by: Mapped[str | None] = mapped_column(Text)
    task: Mapped[str | None] = mapped_column(Text)
    error_class: Mapped[str | None] = mapped_column(Text)
    queue: Mapped[str | None] = mapped_column(Text)
    service: Mapped[str | None] = mapped_column(Text)
    details: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))

    __table_args__ = (
        CheckConstraint(f"kind IN {ISSUE_KINDS!r}", name="kind"),
        CheckConstraint(f"status IN {ISSUE_STATUSES!r}", name="status"),
        Index("ix_jobsys_issues_status_last_seen", "status", text("last_seen DESC")),
        Index("ix_jobsys_issues_kind_status", "kind", "status"),
    )


class IssueAccount(Base):
    """Which accounts an issue touched; inserting a new pair bumps ``affected_accounts``."""

    __tablename__ = "jobsys_issue_accounts"

    issue_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobsys_issues.id", ondelete="CASCADE"), primary_key=True
    )
    account_id: Mapped[str] = mapped_column(Text, primary_key=True)
