"""The ``jobsys_worker_processes`` table: one row per worker process, with heartbeats."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Text, text
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, NowTimestamp, one_of

PROCESS_STATUSES = ("running", "draining", "stopped", "dead", "fenced")


class WorkerProcess(Base):
    __tablename__ = "jobsys_worker_processes"

    #: host:pid:start-time:random — unique per process, never reused after a restart.
    id: Mapped[str] = mapped_column(primary_key=True)
    hostname: Mapped[str]
    pid: Mapped[int]
    lanes: Mapped[list[str]] = mapped_column(ARRAY(Text))
    #: The ``procrastinate_workers`` ids of this process's lanes (one per lane): their
    #: heartbeats are kept alive by the process heartbeat, so the reaper can tell which
    #: running jobs belong to a live process.
    lane_worker_ids: Mapped[list[int]] = mapped_column(
        ARRAY(BigInteger), server_default=text("'{}'")
    )
    #: Lane name to its number of slots in this process (``--concurrency-scale``
    #: and each host's configuration can make them differ from queues.yaml's).
    concurrency: Mapped[dict[str, int]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status: Mapped[str] = mapped_column(server_default="running")
    started_at: Mapped[NowTimestamp]
    last_heartbeat: Mapped[NowTimestamp]
    stopped_at: Mapped[datetime | None]

    __table_args__ = (
        one_of("status", PROCESS_STATUSES),
        Index("ix_jobsys_worker_processes_status_heartbeat", "status", "last_heartbeat"),
    )
