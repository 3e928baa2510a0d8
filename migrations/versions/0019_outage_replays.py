"""retry: outage-replay bookkeeping in its own table

The automatic retry replays a resolved ``service_outage`` issue's failures in batches
and kept its progress (``replayed_at``, ``replay_cursor``, ``replay_retried``) inside
the issue's ``details``, a document the issues domain owns and shows. The retry domain
now keeps it in ``jobsys_outage_replays`` (one row per replayed issue, gone with the
issue); the upgrade moves what ``details`` held and removes those keys from it, the
downgrade moves it back.

Revision ID: 0019_outage_replays
Revises: 0018_lane_worker_ids
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0019_outage_replays"
down_revision: str | Sequence[str] | None = "0018_lane_worker_ids"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KEYS = "ARRAY['replayed_at', 'replay_cursor', 'replay_retried']"


def upgrade() -> None:
    op.create_table(
        "jobsys_outage_replays",
        sa.Column("issue_id", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("replayed_at", postgresql.TIMESTAMP(timezone=True), nullable=True),
        sa.Column("cursor", sa.BigInteger(), nullable=True),
        sa.Column("retried", sa.BigInteger(), server_default="0", nullable=False),
        sa.ForeignKeyConstraint(
            ["issue_id"],
            ["jobsys_issues.id"],
            name=op.f("fk_jobsys_outage_replays_issue_id_jobsys_issues"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("issue_id", name=op.f("pk_jobsys_outage_replays")),
    )
    op.execute(
        f"""
        INSERT INTO jobsys_outage_replays (issue_id, replayed_at, cursor, retried)
        SELECT id, (details->>'replayed_at')::timestamptz,
               (details->>'replay_cursor')::bigint,
               coalesce((details->>'replay_retried')::bigint, 0)
          FROM jobsys_issues
         WHERE details ?| {KEYS}
        """
    )
    op.execute(f"UPDATE jobsys_issues SET details = details - {KEYS} WHERE details ?| {KEYS}")


def downgrade() -> None:
    op.execute(
        """
        UPDATE jobsys_issues i
           SET details = i.details || jsonb_strip_nulls(jsonb_build_object(
               'replayed_at', to_jsonb(r.replayed_at),
               'replay_cursor', r.cursor,
               'replay_retried', r.retried))
          FROM jobsys_outage_replays r
         WHERE r.issue_id = i.id
        """
    )
    op.drop_table("jobsys_outage_replays")
