"""The audit of every retry decision and the outage-replay bookkeeping (pipelines' tables
are ``jobsys.pipelines.models``)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, ForeignKey, Index, text
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, NowTimestamp, SerialId


class RetryEvent(Base):
    """One row per retry decision: the audit of who retried what, when, and why not."""

    __tablename__ = "jobsys_retry_events"

    id: Mapped[SerialId]
    failure_id: Mapped[int] = mapped_column(
        BigInteger, ForeignKey("jobsys_failures.id", ondelete="CASCADE")
    )
    job_id: Mapped[int] = mapped_column(BigInteger)
    decision: Mapped[str]
    new_job_id: Mapped[int | None] = mapped_column(BigInteger)
    actor: Mapped[str]
    batch_id: Mapped[str | None]
    created_at: Mapped[NowTimestamp]

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
    replayed_at: Mapped[datetime | None]
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
