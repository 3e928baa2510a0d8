"""The ``jobsys_bulk_actions`` table (the audit row of every bulk action on jobs), the
unique keys of unique jobs and the searchable text of every job."""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, CheckConstraint, Index, Text, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from jobsys.db.base import Base, JsonObject, NowTimestamp, Progress, SerialId, one_of

BULK_ACTIONS = ("jobs_cancel", "jobs_delete", "queues_purge")
BULK_STATUSES = ("running", "finished")


class BulkAction(Progress, Base):
    """Who ran which bulk action, when, with which filter, on how many jobs. Updated in
    each chunk's own transaction, so an interrupted action's row says what it did."""

    __tablename__ = "jobsys_bulk_actions"

    id: Mapped[SerialId]
    action: Mapped[str]
    actor: Mapped[str]
    filters: Mapped[JsonObject]
    #: Jobs the filter matched when the action started.
    matched: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    #: What was done so far, per outcome (cancelled, abort_requested, deleted).
    counts: Mapped[JsonObject]
    status: Mapped[str] = mapped_column(server_default="running")
    started_at: Mapped[NowTimestamp]

    __table_args__ = (
        one_of("action", BULK_ACTIONS),
        one_of("status", BULK_STATUSES),
        Index("ix_jobsys_bulk_actions_started", text("started_at DESC")),
    )


class UniqueJob(Base):
    """The unique key of a job deferred as unique (``jobsys.jobs.unique``). No foreign
    key to Procrastinate's table: look-ups join it, so the row of a deleted job counts
    for nothing (bulk delete removes it too)."""

    __tablename__ = "jobsys_unique_jobs"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    key: Mapped[str]
    created_at: Mapped[NowTimestamp]

    __table_args__ = (Index("ix_jobsys_unique_jobs_key", "key", text("job_id DESC")),)


class JobSearch(Base):
    """The searchable text of a job's args (``jobs list --arg-contains``): its string
    and number values, the values of redacted keys replaced, one per line. Written once
    by the worker's search-index pass (``jobsys.jobs.search_index``), not at insert (a
    producer pays nothing) and never on a status change (a claim or a finish neither).
    Its foreign key to Procrastinate's table (ON DELETE CASCADE: the row goes with its
    job) is the migration's, not the model's (the models never name Procrastinate's
    tables)."""

    __tablename__ = "jobsys_job_search"

    job_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    args_text: Mapped[str]

    __table_args__ = (
        Index(
            "ix_jobsys_job_search_trgm",
            "args_text",
            postgresql_using="gin",
            postgresql_ops={"args_text": "gin_trgm_ops"},
        ),
    )


class JobSearchState(Base):
    """The search-index pass's one row: the redacted keys the search text leaves out
    (lower case, ``_`` for ``-``: the defaults of ``redaction.keys``), the cursor
    (``indexed_up_to``: every job at or below it has its ``jobsys_job_search`` row) and
    the next stretch (``pending_up_to``), taken once no transaction of
    ``pending_snapshot`` (a ``pg_snapshot`` as text) and none of ``pending_writers``
    (the virtual transaction ids that held the job table's write lock) is still
    running."""

    __tablename__ = "jobsys_job_search_state"

    only_row: Mapped[bool] = mapped_column(Boolean, primary_key=True, server_default=text("true"))
    keys: Mapped[list[str]] = mapped_column(ARRAY(Text))
    indexed_up_to: Mapped[int] = mapped_column(BigInteger, server_default=text("0"))
    pending_up_to: Mapped[int | None] = mapped_column(BigInteger)
    pending_snapshot: Mapped[str | None]
    pending_writers: Mapped[list[str] | None] = mapped_column(ARRAY(Text))

    __table_args__ = (CheckConstraint("only_row", name="only_row"),)
