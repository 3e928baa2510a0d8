"""lanes: the claim functions never keep a plan that scans the job table

``jobsys_claim_v1`` (0026) and ``jobsys_claim_limited_v1`` (0022) keep one generic plan
per server session (``plan_cache_mode = force_generic_plan``), made at the session's
first claim from the statistics of that moment. When that first claim came while the
job table was empty and analyzed (jobs deleted when done, a retention purge, a fresh
database that autovacuum analyzed), the kept plan was a sequential scan: every later
claim of 10 read the whole backlog (20,000 rows with 20,000 waiting) until the
connection closed, which with autovacuum off (or no new analyze) is for good.
``enable_seqscan = off`` in the functions' own settings makes the plan walk the
queue's index whatever the statistics said when it was made
(``tests/integration/test_claim.py``). Found in review.

Revision ID: 0027_claim_functions_index_only
Revises: 0026_lane_claim_function
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0027_claim_functions_index_only"
down_revision: str | Sequence[str] | None = "0026_lane_claim_function"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FUNCTIONS = (
    "jobsys_claim_v1(character varying[], bigint, integer, boolean)",
    "jobsys_claim_limited_v1(character varying[], bigint, integer, boolean, text[], text[], "
    "text[], text[], text[], integer[], integer[], double precision[], double precision)",
)


def upgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} SET enable_seqscan = off")


def downgrade() -> None:
    for function in FUNCTIONS:
        op.execute(f"ALTER FUNCTION {function} RESET enable_seqscan")
