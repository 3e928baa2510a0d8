"""Alembic owns the schema: upgrade, drift, round trip, and Procrastinate left alone."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from jobsys.db import migrate
from jobsys.db.schema import HEAD_REVISION, KNOWN_REVISIONS
from jobsys.engine.schema import PINNED_VERSION, snapshot_sql


def tables(url: str) -> set[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
    return {r[0] for r in rows}


def test_single_head_matches_the_code_constant() -> None:
    assert migrate.heads() == [HEAD_REVISION]
    assert sorted(migrate.all_revisions()) == sorted(KNOWN_REVISIONS)


def test_pinned_procrastinate_matches_installed_and_snapshot() -> None:
    import procrastinate
    from procrastinate.schema import SchemaManager

    assert procrastinate.__version__ == PINNED_VERSION
    assert snapshot_sql() == SchemaManager.get_schema()


def test_upgrade_empty_database_to_head_then_no_drift(empty_db_url: str) -> None:
    assert migrate.current(empty_db_url) == []
    migrate.upgrade(empty_db_url)
    assert migrate.current(empty_db_url) == [HEAD_REVISION]
    assert {"procrastinate_jobs", "jobsys_failures", "jobsys_issues"} <= tables(empty_db_url)
    assert migrate.drift(empty_db_url) == []


def test_downgrade_upgrade_round_trip(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    migrate.downgrade(empty_db_url, "base")
    assert migrate.current(empty_db_url) == []
    assert tables(empty_db_url) == {"alembic_version"}
    migrate.upgrade(empty_db_url)
    assert migrate.current(empty_db_url) == [HEAD_REVISION]
    assert migrate.drift(empty_db_url) == []


def test_outage_replay_bookkeeping_moves_out_of_issue_details_and_back(
    empty_db_url: str,
) -> None:
    """0019 moves ``replayed_at``/``replay_cursor``/``replay_retried`` from an issue's
    ``details`` into ``jobsys_outage_replays`` (other keys stay); its downgrade moves
    them back."""
    migrate.upgrade(empty_db_url, "0018_lane_worker_ids")
    details = '{"service": "ai", "replayed_at": "2026-01-02T03:04:05+00:00", "replay_retried": 7}'
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobsys_issues (id, fingerprint, kind, title, details) VALUES"
            " (1, 'a', 'service_outage', 'a', %s::jsonb), (2, 'b', 'service_outage', 'b',"
            " '{\"replay_cursor\": 42}'), (3, 'c', 'job_failure', 'c', '{\"x\": 1}')",
            (details,),
        )
    migrate.upgrade(empty_db_url)
    with psycopg.connect(empty_db_url) as conn:
        moved = conn.execute(
            "SELECT issue_id, replayed_at = '2026-01-02T03:04:05Z', cursor, retried"
            " FROM jobsys_outage_replays ORDER BY issue_id"
        ).fetchall()
        left = conn.execute("SELECT details FROM jobsys_issues ORDER BY id").fetchall()
    assert moved == [(1, True, None, 7), (2, None, 42, 0)]
    assert [r[0] for r in left] == [{"service": "ai"}, {}, {"x": 1}]
    migrate.downgrade(empty_db_url, "0018_lane_worker_ids")
    with psycopg.connect(empty_db_url) as conn:
        back = conn.execute("SELECT details FROM jobsys_issues ORDER BY id").fetchall()
    first = back[0][0]
    assert datetime.fromisoformat(first.pop("replayed_at")) == datetime(
        2026, 1, 2, 3, 4, 5, tzinfo=UTC
    )
    assert [first] + [r[0] for r in back[1:]] == [
        {"service": "ai", "replay_retried": 7},
        {"replay_cursor": 42, "replay_retried": 0},
        {"x": 1},
    ]


def test_resolved_issues_muted_before_the_refusal_are_resolved_again(
    empty_db_url: str,
) -> None:
    """Before 57e7d06 a mute of a resolved issue made it 'muted' and kept resolved_at:
    once the mute ran out it read open. 0031 resolves those rows again as they were
    resolved (the mute goes) and drops a stale resolved_reason from an issue not
    resolved; real mutes and open issues stay. Its downgrade changes nothing."""
    from jobsys.issues.store import STATUS_OPEN_CLAUSE

    before = "0030_events_delete_as_owner"
    migrate.upgrade(empty_db_url, before)
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobsys_issues (id, fingerprint, kind, title, status, resolved_at,"
            " resolved_by, details) VALUES"
            " (1, 'healed', 'job_failure', 'h', 'resolved', '2026-12-01T03:00Z', 'auto',"
            '  \'{"resolved_reason": "healed"}\'),'
            " (2, 'by-alice', 'job_failure', 'a', 'resolved', '2026-12-01T04:00Z', 'alice',"
            "  '{}'),"
            " (3, 'muted', 'job_failure', 'm', 'open', NULL, NULL, '{}'),"
            " (4, 'recurred', 'job_failure', 'r', 'open', NULL, NULL,"
            '  \'{"resolved_reason": "healed", "x": 1}\'),'
            " (5, 'resolved', 'job_failure', 's', 'resolved', '2026-12-01T05:00Z', 'bob', '{}')"
        )
        # The mute as it was before 57e7d06 (no status test): issue 1's has run out.
        for issue_id, until in ((1, "-1 hour"), (2, "1 hour"), (3, "1 hour")):
            conn.execute(
                "UPDATE jobsys_issues SET status = 'muted',"
                " muted_until = now() + %s::interval,"
                " details = details - 'reopened_by' || jsonb_build_object('muted_by', 'carol')"
                " WHERE id = %s",
                (until, issue_id),
            )

    def state() -> list[tuple[object, ...]]:
        with psycopg.connect(empty_db_url) as conn:
            return conn.execute(
                f"SELECT id, status, muted_until IS NOT NULL, resolved_by, details,"
                f" {STATUS_OPEN_CLAUSE} FROM jobsys_issues ORDER BY id"
            ).fetchall()

    assert [r[0] for r in state() if r[5]] == [1, 4]  # the healed issue reads open
    migrate.upgrade(empty_db_url)
    repaired = [
        (1, "resolved", False, "auto", {"resolved_reason": "healed"}, False),
        (2, "resolved", False, "alice", {}, False),
        (3, "muted", True, None, {"muted_by": "carol"}, False),
        (4, "open", False, None, {"x": 1}, True),
        (5, "resolved", False, "bob", {}, False),
    ]
    assert state() == repaired
    migrate.downgrade(empty_db_url, before)
    assert state() == repaired
    migrate.upgrade(empty_db_url)
    assert state() == repaired


def test_drift_is_detected(db_url: str) -> None:
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE jobsys_failures ADD COLUMN surprise integer")
        conn.execute("CREATE TABLE jobsys_stray (id int)")
    diffs = migrate.drift(db_url)
    assert sorted(diffs) == [
        "remove_column: jobsys_failures.surprise",
        "remove_table: jobsys_stray",
    ]


def test_the_applications_own_tables_are_not_drift(db_url: str) -> None:
    """A fan-out source or the demo's accounts share the database: not jobsys's schema."""
    from jobsys.demo import store as demo_store

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE accounts (id bigint PRIMARY KEY, active boolean)")
        conn.execute(demo_store.CREATE_ACCOUNTS)
        conn.execute(demo_store.CREATE_STORY_IDS)
    assert migrate.drift(db_url) == []


def test_autogenerate_leaves_procrastinate_objects_alone(db_url: str) -> None:
    """Procrastinate's tables are not in our models: autogenerate must not drop them,
    nor react to changes Procrastinate makes to them."""
    from alembic.autogenerate import produce_migrations
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine, pool

    from jobsys.db.models import metadata

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE procrastinate_jobs ADD COLUMN extra_by_procrastinate text")
        conn.execute("CREATE INDEX procrastinate_extra_idx ON procrastinate_jobs (task_name)")
    engine = create_engine(migrate.sqlalchemy_url(db_url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        ctx = MigrationContext.configure(
            conn, opts={"include_object": migrate.include_object, "compare_type": True}
        )
        script = produce_migrations(ctx, metadata)
    engine.dispose()
    assert script.upgrade_ops is not None
    assert script.upgrade_ops.is_empty(), script.upgrade_ops.as_diffs()
    # And the filter really is what protects them: without it, autogenerate would drop them.
    engine = create_engine(migrate.sqlalchemy_url(db_url), poolclass=pool.NullPool)
    with engine.connect() as conn:
        unfiltered = produce_migrations(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert any("procrastinate_jobs" in repr(d) for d in unfiltered.upgrade_ops.as_diffs())  # type: ignore[union-attr]


def test_migration_sql_selects_the_version_range() -> None:
    from jobsys.engine.schema import migration_sql

    assert migration_sql(PINNED_VERSION, PINNED_VERSION) == []
    assert len(migration_sql("3.3.0", "3.4.0")) >= 1


@pytest.mark.parametrize("command", [["db", "current"], ["db", "check"]])
def test_commands_report_missing_schema(cli, empty_db_url: str, command: list[str]) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", empty_db_url, *command)
    assert result.exit_code in (1, 2)
    assert "jobsys db upgrade" in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def queue_table_settings(url: str) -> tuple[list[str], list[str]]:
    """(reloptions of procrastinate_jobs, jobsys's own indexes on it)."""
    with psycopg.connect(url) as conn:
        options = conn.execute(
            "SELECT coalesce(reloptions, '{}') FROM pg_class WHERE relname = 'procrastinate_jobs'"
        ).fetchone()
        indexes = conn.execute(
            "SELECT indexname FROM pg_indexes WHERE tablename = 'procrastinate_jobs' "
            "AND indexname LIKE 'ix_jobsys_%' ORDER BY 1"
        ).fetchall()
    assert options is not None
    return sorted(options[0]), [r[0] for r in indexes]


def test_the_job_table_gets_its_lock_index_and_queue_autovacuum_and_gives_them_back(
    empty_db_url: str,
) -> None:
    migrate.upgrade(empty_db_url, "0012_claim_at_depth")
    options, indexes = queue_table_settings(empty_db_url)
    assert "autovacuum_vacuum_scale_factor=0.01" in options
    assert "autovacuum_analyze_scale_factor=0.02" in options
    assert {"ix_jobsys_jobs_active_lock", "ix_jobsys_jobs_waiting_by_queue"} <= set(indexes)
    migrate.downgrade(empty_db_url, "0011_queue_pauses")
    options, indexes = queue_table_settings(empty_db_url)
    assert options == []
    assert not {"ix_jobsys_jobs_active_lock", "ix_jobsys_jobs_waiting_by_queue"} & set(indexes)
