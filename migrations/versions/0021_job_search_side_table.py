"""jobs: ``--arg-contains`` indexed again, outside the job table's row

0017 dropped the trigram index on ``procrastinate_jobs`` because every status change
re-inserted the row into it (``status`` is indexed: no HOT update). The searchable
text now lives in ``jobsys_job_search`` (job id, redacted args text), removed with its
job (ON DELETE CASCADE), never touched by a status change. It is NOT written at insert
time (an insert trigger halved ``defer_many``): the worker's search-index pass
(``jobsys.jobs.search_index``) copies the jobs above a cursor in batches, and
``jobs list --arg-contains`` uses the trigram index up to the cursor and filters the
newer jobs row by row, so results stay exact. ``jobsys_job_search_state`` (one row)
holds the redacted keys, the cursor (``indexed_up_to``: every job at or below it has
its row) and the next stretch the pass may take once the transactions that could
still insert into it have ended (``pending_up_to``, ``pending_snapshot``,
``pending_writers``). The
backfill is the pass's (it starts from 0), so the upgrade is instant.

The text is the args' string and number values with the values of redacted keys
replaced by ``[REDACTED]`` (``jobsys.failures.redaction.Redactor``'s rule: a key whose
lower-cased name, ``-`` as ``_``, contains a redacted key, at any depth; deeper than 32
levels cut), so a secret is never in the searchable text. The redacted keys are those
in ``jobsys_job_search_state`` (the defaults of ``redaction.keys``).

Revision ID: 0021_job_search_side_table
Revises: 0020_failures_pair_statistics
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0021_job_search_side_table"
down_revision: str | Sequence[str] | None = "0020_failures_pair_statistics"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: ``jobsys.config.models.DEFAULT_REDACTED_KEYS`` when this revision was written
#: (a migration does not import the application).
DEFAULT_KEYS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "cookie",
    "session",
    "authorization",
    "auth",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "otp",
)

REDACTED_TEXTS = r"""
CREATE OR REPLACE FUNCTION jobsys_redacted_texts(v jsonb, keys text[], depth int)
RETURNS SETOF text LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    k text;
    item jsonb;
BEGIN
    IF depth > 32 THEN
        RETURN NEXT '[REDACTED]';
        RETURN;
    END IF;
    CASE jsonb_typeof(v)
    WHEN 'object' THEN
        FOR k, item IN SELECT e.key, e.value FROM jsonb_each(v) e LOOP
            IF EXISTS (SELECT 1 FROM unnest(keys) n
                        WHERE strpos(replace(lower(k), '-', '_'), n) > 0) THEN
                RETURN NEXT '[REDACTED]';
            ELSE
                RETURN QUERY SELECT * FROM jobsys_redacted_texts(item, keys, depth + 1);
            END IF;
        END LOOP;
    WHEN 'array' THEN
        FOR item IN SELECT e FROM jsonb_array_elements(v) e LOOP
            RETURN QUERY SELECT * FROM jobsys_redacted_texts(item, keys, depth + 1);
        END LOOP;
    WHEN 'string', 'number' THEN
        RETURN NEXT v #>> '{}';
    ELSE
        RETURN;
    END CASE;
END
$$
"""

# A regex matching any redacted key's text (``_`` also as ``-``), case-insensitive: args
# whose JSON text it does not match have no redacted key (nearly all), and take 0010's
# jobsys_args_text, no PL/pgSQL walk. Computed once per batch of the pass.
KEYS_PATTERN = r"""
CREATE OR REPLACE FUNCTION jobsys_redacted_keys_pattern(keys text[])
RETURNS text LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS $$
    SELECT coalesce(
        string_agg(replace(regexp_replace(n, '([^[:alnum:]_])', '\\\1', 'g'), '_', '[-_]'), '|'),
        '[^\s\S]')
      FROM unnest(keys) n
$$
"""

REDACTED_ARGS_TEXT = r"""
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
    op.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    op.execute(
        "CREATE TABLE jobsys_job_search_state ("
        " only_row boolean DEFAULT true"
        " CONSTRAINT pk_jobsys_job_search_state PRIMARY KEY"
        " CONSTRAINT ck_jobsys_job_search_state_only_row CHECK (only_row),"
        " keys text[] NOT NULL,"
        " indexed_up_to bigint DEFAULT 0 NOT NULL,"
        " pending_up_to bigint,"
        " pending_snapshot text,"
        " pending_writers text[])"
    )
    keys = ", ".join(f"'{k}'" for k in DEFAULT_KEYS)
    op.execute(f"INSERT INTO jobsys_job_search_state (keys) VALUES (ARRAY[{keys}])")
    op.execute(REDACTED_TEXTS)
    op.execute(KEYS_PATTERN)
    op.execute(REDACTED_ARGS_TEXT)
    op.execute(
        "CREATE TABLE jobsys_job_search ("
        " job_id bigint CONSTRAINT pk_jobsys_job_search PRIMARY KEY"
        " CONSTRAINT fk_jobsys_job_search_job_id_procrastinate_jobs"
        " REFERENCES procrastinate_jobs (id) ON DELETE CASCADE,"
        " args_text text NOT NULL)"
    )
    op.execute(
        "CREATE INDEX ix_jobsys_job_search_trgm "
        "ON jobsys_job_search USING gin (args_text gin_trgm_ops)"
    )


def downgrade() -> None:
    op.execute("DROP TABLE IF EXISTS jobsys_job_search")
    op.execute("DROP FUNCTION IF EXISTS jobsys_redacted_args_text(jsonb, text[], text)")
    op.execute("DROP FUNCTION IF EXISTS jobsys_redacted_keys_pattern(text[])")
    op.execute("DROP FUNCTION IF EXISTS jobsys_redacted_texts(jsonb, text[], int)")
    op.execute("DROP TABLE IF EXISTS jobsys_job_search_state")
