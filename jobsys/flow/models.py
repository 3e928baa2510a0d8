"""Queue pauses in effect, and the audit of every pause and resume.

One row per paused queue (a lane's pause is a row per queue of the lane), so the
claim checks one small table by primary key. A pause with ``until`` ends by itself:
from that time on the claim ignores the row (it is deleted by the next resume or
replaced by the next pause).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, text
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, NowTimestamp, SerialId, one_of

PAUSE_ACTIONS = ("pause", "resume")


class QueuePause(Base):
    __tablename__ = "jobsys_queue_pauses"

    queue: Mapped[str] = mapped_column(primary_key=True)
    paused_at: Mapped[NowTimestamp]
    paused_by: Mapped[str]
    reason: Mapped[str | None]
    #: The pause ends by itself at this time (``--for``); NULL: until resumed.
    until: Mapped[datetime | None]
    #: What the operator named: the queue, its lane, or ``--all``.
    target: Mapped[str]


class QueuePauseEvent(Base):
    """One row per queue per pause or resume: who, when, why, until."""

    __tablename__ = "jobsys_queue_pause_events"

    id: Mapped[SerialId]
    queue: Mapped[str]
    action: Mapped[str]
    actor: Mapped[str]
    reason: Mapped[str | None]
    until: Mapped[datetime | None]
    target: Mapped[str]
    #: Whether a pause was in effect on the queue just before this action.
    was_paused: Mapped[bool]
    created_at: Mapped[NowTimestamp]

    __table_args__ = (
        one_of("action", PAUSE_ACTIONS),
        Index("ix_jobsys_queue_pause_events_queue", "queue", "created_at"),
    )


class FlowStart(Base):
    """One row per job started under a flow limit: its bucket (``kind:target:key``)
    and when it was claimed. Rates count the rows in the window; concurrency counts the
    rows whose job still runs. Rows older than every window whose job ended are pruned
    by the claims."""

    __tablename__ = "jobsys_flow_starts"

    id: Mapped[SerialId]
    bucket: Mapped[str]
    job_id: Mapped[int] = mapped_column(BigInteger)
    started_at: Mapped[datetime] = mapped_column(server_default=text("clock_timestamp()"))

    __table_args__ = (
        Index("ix_jobsys_flow_starts_bucket", "bucket", "started_at"),
        Index("ix_jobsys_flow_starts_job", "job_id"),
    )
