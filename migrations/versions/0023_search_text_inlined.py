"""search: ``jobsys_redacted_args_text`` inlined into the search-index pass

The pass (``jobsys.engine.queries.SEARCH_INDEX_BATCH``) called 0021's
``jobsys_redacted_args_text`` once per job. As written there (``STRICT``, a sub-select
in its ``CASE``), PostgreSQL could not inline it: every call went through the SQL
function executor, about 88 µs a job, nine tenths of the pass (5,000 jobs: 441 ms; the
same ``CASE`` written into the query: 48 ms). That was a quarter of the server's CPU per
job while a worker drained a backlog.

Now the walk of args that do hold a redacted key is a function of its own,
``jobsys_redacted_walk_text``, and ``jobsys_redacted_args_text`` is a single ``CASE``
with no sub-select and not ``STRICT``: the planner inlines it into the calling query.
The text is the same for every args (``args`` is never NULL in ``procrastinate_jobs``;
a NULL now gives ``''`` rather than NULL).

Revision ID: 0023_search_text_inlined
Revises: 0022_flow_claim_function
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023_search_text_inlined"
down_revision: str | Sequence[str] | None = "0022_flow_claim_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REDACTED_WALK_TEXT = r"""
CREATE OR REPLACE FUNCTION jobsys_redacted_walk_text(args jsonb, keys text[])
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(string_agg(t, E'\n'), '') FROM jobsys_redacted_texts(args, keys, 0) t
$$
"""

# Inlinable: one expression, no sub-select, not STRICT (a CASE is not strict, and the
# planner inlines a STRICT function only when its body is).
REDACTED_ARGS_TEXT = r"""
CREATE OR REPLACE FUNCTION jobsys_redacted_args_text(args jsonb, keys text[], pattern text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE CALLED ON NULL INPUT AS $$
    SELECT CASE
        WHEN args::text !~* pattern THEN jobsys_args_text(args)
        ELSE jobsys_redacted_walk_text(args, keys)
    END
$$
"""

#: 0021's definition, for the downgrade.
REDACTED_ARGS_TEXT_0021 = r"""
CREATE OR REPLACE FUNCTION jobsys_redacted_args_text(args jsonb, keys text[], pattern text)
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT CASE
        WHEN args::text !~* pattern THEN jobsys_args_text(args)
        ELSE (SELECT coalesce(string_agg(t, E'\n'), '')
                FROM jobsys_redacted_texts(args, keys, 0) t)
    END
$$
"""


def upgrade() -> None:
    op.execute(REDACTED_WALK_TEXT)
    op.execute(REDACTED_ARGS_TEXT)


def downgrade() -> None:
    op.execute(REDACTED_ARGS_TEXT_0021)
    op.execute("DROP FUNCTION IF EXISTS jobsys_redacted_walk_text(jsonb, text[])")
