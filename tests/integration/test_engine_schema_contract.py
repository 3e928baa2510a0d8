"""The database side of what ``jobsys.engine`` relies on in Procrastinate's schema: the
SQL functions it calls (with their signatures), the composite type its fan-out builds,
the columns and enum values its queries read, the NOTIFY payloads its listener parses
and the fetch rule its claim copies. A schema change in a Procrastinate upgrade fails
here, naming what changed. (The Python side: ``tests/unit/test_engine_api_contract.py``.)
"""

from __future__ import annotations

import psycopg
import pytest

from jobsys.engine import channels, queries

#: name -> "identity arguments -> result", as PostgreSQL prints them.
FUNCTIONS = {
    "procrastinate_defer_jobs_v1": "jobs procrastinate_job_to_defer_v1[] -> bigint[]",
    "procrastinate_retry_job_v2": "job_id bigint, retry_at timestamp with time zone, "
    "new_priority integer, new_queue_name character varying, new_lock character varying "
    "-> void",
    "procrastinate_finish_job_v1": "job_id bigint, end_status procrastinate_job_status, "
    "delete_job boolean -> void",
    "procrastinate_cancel_job_v1": "job_id bigint, abort boolean, delete_job boolean -> bigint",
    "procrastinate_fetch_job_v2": "target_queue_names character varying[], p_worker_id bigint "
    "-> procrastinate_jobs",
}

#: ``queries.FANOUT_BATCH`` builds ROW(...) values of this type, in this order.
JOB_TO_DEFER = (
    "queue_name character varying, task_name character varying, priority integer, "
    "lock text, queueing_lock text, args jsonb, scheduled_at timestamp with time zone"
)

#: Columns jobsys's queries read or write.
COLUMNS = {
    "procrastinate_jobs": {
        "id",
        "queue_name",
        "task_name",
        "priority",
        "lock",
        "queueing_lock",
        "args",
        "status",
        "scheduled_at",
        "attempts",
        "abort_requested",
        "worker_id",
    },
    "procrastinate_events": {"id", "job_id", "type", "at"},
    "procrastinate_workers": {"id", "last_heartbeat"},
}

ENUMS = {
    "procrastinate_job_status": {"todo", "doing", "succeeded", "failed", "cancelled", "aborted"},
    "procrastinate_job_event_type": {
        "deferred",
        "started",
        "deferred_for_retry",
        "failed",
        "succeeded",
        "aborted",
        "retried",
    },
}

#: ``queries.CLAIM_JOBS`` is ``procrastinate_fetch_job_v2`` claiming several jobs: when
#: Procrastinate changes its fetch rule, this digest changes; re-read the function and
#: bring CLAIM_JOBS in line, then update the digest.
FETCH_JOB_SOURCE_MD5 = "6e0906e2a5765ba6712446c4b6cdc383"


def rows(db_url: str, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with psycopg.connect(db_url) as conn:
        return list(conn.execute(sql, params).fetchall())


@pytest.mark.parametrize(("name", "signature"), sorted(FUNCTIONS.items()))
def test_sql_function_signatures(db_url: str, name: str, signature: str) -> None:
    found = rows(
        db_url,
        "SELECT pg_get_function_identity_arguments(oid) || ' -> ' || pg_get_function_result(oid)"
        " FROM pg_proc WHERE proname = %s",
        (name,),
    )
    assert [r[0] for r in found] == [signature], f"{name}: signature changed or missing"


def test_the_retry_function_jobsys_calls_is_pinned() -> None:
    assert queries.RETRY_FUNCTION in FUNCTIONS


def test_the_job_to_defer_type(db_url: str) -> None:
    (found,) = rows(
        db_url,
        "SELECT string_agg(attname || ' ' || format_type(atttypid, atttypmod), ', '"
        " ORDER BY attnum) FROM pg_attribute"
        " WHERE attrelid = 'procrastinate_job_to_defer_v1'::regclass AND attnum > 0",
    )
    assert found[0] == JOB_TO_DEFER


@pytest.mark.parametrize(("table", "columns"), sorted(COLUMNS.items()))
def test_columns(db_url: str, table: str, columns: set[str]) -> None:
    found = {
        r[0]
        for r in rows(
            db_url,
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s",
            (table,),
        )
    }
    assert columns - found == set(), f"{table}: columns gone"


@pytest.mark.parametrize(("enum", "values"), sorted(ENUMS.items()))
def test_enum_values(db_url: str, enum: str, values: set[str]) -> None:
    (found,) = rows(db_url, f"SELECT enum_range(NULL::{enum})::text[]")
    assert values - set(found[0]) == set(), f"{enum}: values gone"  # type: ignore[arg-type]


def test_insert_and_abort_notifications_are_what_the_listener_parses(db_url: str) -> None:
    """The abort wake-up is Procrastinate's trigger; the insert one is jobsys's since
    migration 0024 (its behaviour: tests/integration/test_job_triggers.py)."""
    sources = dict(
        rows(
            db_url,
            "SELECT proname, prosrc FROM pg_proc WHERE proname IN "
            "('jobsys_job_events_insert_v1', 'procrastinate_notify_queue_abort_job_v1')",
        )
    )
    abort = str(sources["procrastinate_notify_queue_abort_job_v1"])
    assert f"'type', '{channels.ABORT_REQUESTED}', 'job_id', NEW.id" in abort
    inserted = str(sources["jobsys_job_events_insert_v1"])
    assert f"'type', '{channels.JOB_INSERTED}', 'job_id'" in inserted
    for source in (abort, inserted):
        assert f"'{channels.QUEUE_CHANNEL_PREFIX}' || " in source
        assert f"'{channels.ANY_QUEUE_CHANNEL}'" in source


def test_the_job_table_triggers_are_jobsys_per_statement_ones(db_url: str) -> None:
    """Migration 0024 replaced Procrastinate's per-row insert and status triggers. A
    Procrastinate upgrade that brings them back would record every event twice."""
    found = {
        r[0]
        for r in rows(
            db_url,
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'procrastinate_jobs'::regclass "
            "AND NOT tgisinternal",
        )
    }
    assert {"jobsys_job_events_insert_v1", "jobsys_job_events_update_v1"} <= found
    assert not found & {
        "procrastinate_trigger_status_events_insert_v1",
        "procrastinate_jobs_notify_queue_job_inserted_v1",
        "procrastinate_trigger_status_events_update_v1",
    }


def test_the_fetch_rule_claim_jobs_copies_is_unchanged(db_url: str) -> None:
    (found,) = rows(
        db_url, "SELECT md5(prosrc) FROM pg_proc WHERE proname = 'procrastinate_fetch_job_v2'"
    )
    assert found[0] == FETCH_JOB_SOURCE_MD5, (
        "procrastinate_fetch_job_v2 changed: re-read it and update "
        "jobsys.engine.queries.CLAIM_JOBS, then this digest"
    )


def test_job_events_go_with_their_jobs_by_jobsys_trigger_not_a_foreign_key(db_url: str) -> None:
    """Migration 0029 dropped Procrastinate's ``procrastinate_events_job_id_fkey`` (ON
    DELETE CASCADE): ``jobsys_job_events_delete_v1`` deletes a job's events through
    Procrastinate's ``job_id`` index, ``jobsys_job_events_truncate_v1`` on TRUNCATE. A
    Procrastinate upgrade that adds the foreign key back (or drops that index) fails
    here (the behaviour: tests/integration/test_events_without_fk.py)."""
    foreign_keys = rows(
        db_url,
        "SELECT conname FROM pg_constraint WHERE conrelid = 'procrastinate_events'::regclass "
        "AND contype = 'f'",
    )
    assert foreign_keys == []
    triggers = {
        r[0]
        for r in rows(
            db_url,
            "SELECT tgname FROM pg_trigger WHERE tgrelid = 'procrastinate_jobs'::regclass "
            "AND NOT tgisinternal",
        )
    }
    assert {"jobsys_job_events_delete_v1", "jobsys_job_events_truncate_v1"} <= triggers
    (index,) = rows(
        db_url,
        "SELECT indexdef FROM pg_indexes WHERE indexname = 'procrastinate_events_job_id_fkey_v1'",
    )
    assert str(index[0]).endswith("USING btree (job_id)")
