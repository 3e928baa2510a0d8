"""jobs: drop the trigram index behind ``jobs list --arg-contains``

``ix_jobsys_jobs_args_text_trgm`` (0010) made a rare ``--arg-contains`` text fast, but
every job status change paid for it: ``status`` is indexed, so a claim or a finish is
not a HOT update and re-inserts the row into every index of ``procrastinate_jobs``,
and a pg_trgm GIN entry over every arg value is the most expensive of them (measured
on 20,000 jobs: todo -> doing -> succeeded took about twice as long with it). Job
throughput matters more than a rare text search, so ``--arg-contains`` now walks the
jobs newest first (primary key, backwards) and stops at ``--limit`` matches: fast when
the text is common or recent, a scan of the table when it is rare. ``--arg`` keeps its
GIN ``jsonb_path_ops`` index (cheap to maintain). ``jobsys_args_text`` stays: the
filter still uses it.

Revision ID: 0017_drop_args_text_trgm
Revises: 0016_failures_kind_pairs
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0017_drop_args_text_trgm"
down_revision: str | Sequence[str] | None = "0016_failures_kind_pairs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("DROP INDEX IF EXISTS ix_jobsys_jobs_args_text_trgm")


def downgrade() -> None:
    op.execute(
        "CREATE INDEX IF NOT EXISTS ix_jobsys_jobs_args_text_trgm "
        "ON procrastinate_jobs USING gin (jobsys_args_text(args) gin_trgm_ops)"
    )
