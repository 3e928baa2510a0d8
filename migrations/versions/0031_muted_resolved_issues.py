"""issues: resolved issues muted before 57e7d06 are resolved again

Before commit 57e7d06 ``issues mute`` accepted a resolved issue: it set ``status =
'muted'`` and ``muted_until`` and left ``resolved_at`` / ``resolved_by`` (and a
``resolved_reason`` such as ``healed``) as they were. Once the mute ran out such an
issue read ``open`` (``STATUS_OPEN_CLAUSE``, ``EFFECTIVE_STATUS``): a healed issue back
among those that need someone. Since then a mute of a resolved issue is refused.

Those rows are the ones with ``status <> 'resolved'`` and ``resolved_at`` set: every
other write keeps ``resolved_at`` only on a resolved issue (a resolve sets it, a
reopen by hand clears it, a recurrence clears it unless the issue stays resolved). The
upgrade makes them resolved again as their resolution left them (``resolved_at``,
``resolved_by``, ``resolved_reason`` kept; the mute and ``muted_by`` dropped, as a
resolve drops them). A legacy row that recurred while muted lost its ``resolved_at``
then and rightly stays as it is, but a ``resolved_reason`` left on it (or on any
issue not resolved) is stale and goes too.

Downgrade changes nothing: the repaired rows are valid at 0030 (and the mute they lose
is what 57e7d06 refuses to write).

Revision ID: 0031_muted_resolved_issues
Revises: 0030_events_delete_as_owner
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0031_muted_resolved_issues"
down_revision: str | Sequence[str] | None = "0030_events_delete_as_owner"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        UPDATE jobsys_issues
           SET status = 'resolved', muted_until = NULL, details = details - 'muted_by'
         WHERE status <> 'resolved' AND resolved_at IS NOT NULL
        """
    )
    op.execute(
        """
        UPDATE jobsys_issues SET details = details - 'resolved_reason'
         WHERE status <> 'resolved' AND details ? 'resolved_reason'
        """
    )


def downgrade() -> None:
    pass
