"""Migration 0029: ``procrastinate_events`` has no foreign key to ``procrastinate_jobs``
any more; a job's events still go with the job, by every path jobsys and Procrastinate
delete jobs by (real PostgreSQL), also when the delete waits for a transaction that
wrote an event, and the downgrade brings the foreign key back."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from jobsys.db import migrate
from jobsys.engine import bulk, queries

FOREIGN_KEY = "procrastinate_events_job_id_fkey"


def insert_jobs(conn: Any, n: int, end: str, queue: str = "q1") -> list[int]:
    """``n`` jobs moved from ``todo`` through ``doing`` to ``end``: one event per status
    change (a job left ``todo`` has its ``deferred`` event only)."""
    ids = [
        int(r[0])
        for r in conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT %s, 't', '{}' FROM generate_series(1, %s) RETURNING id",
            (queue, n),
        ).fetchall()
    ]
    for status in ("doing", end)[: {"todo": 0, "doing": 1}.get(end, 2)]:
        conn.execute("UPDATE procrastinate_jobs SET status = %s WHERE id = ANY(%s)", (status, ids))
    return ids


def events(conn: Any, ids: list[int]) -> int:
    return int(
        conn.execute(
            "SELECT count(*) FROM procrastinate_events WHERE job_id = ANY(%s)", (ids,)
        ).fetchone()[0]
    )


def _ack_deleting(conn: Any, ids: list[int]) -> None:
    conn.execute(
        queries.FINISH_JOBS,
        {"ids": ids, "statuses": ["succeeded"] * len(ids), "deletes": [True] * len(ids)},
    )


def _finish_function(conn: Any, ids: list[int]) -> None:
    for job in ids:
        conn.execute("SELECT procrastinate_finish_job_v1(%s, 'succeeded', true)", (job,))


def _cancel_function(conn: Any, ids: list[int]) -> None:
    for job in ids:
        conn.execute("SELECT procrastinate_cancel_job_v1(%s, false, true)", (job,))


def _delete_old_jobs(conn: Any, ids: list[int]) -> None:
    from procrastinate import sql

    conn.execute(
        sql.queries["delete_old_jobs"],
        {"nb_hours": 0, "queue": "q1", "statuses": ["succeeded"]},
    )


def _retention(conn: Any, ids: list[int]) -> None:
    conn.execute(
        queries.DELETE_FINISHED_JOBS,
        {"statuses": ["succeeded"], "before": "infinity", "limit": 1000},
    )


def _bulk_delete(conn: Any, ids: list[int]) -> None:
    conn.execute(bulk.DELETE, {"ids": ids})


def _truncate(conn: Any, ids: list[int]) -> None:
    conn.execute("TRUNCATE procrastinate_jobs CASCADE")


#: path -> (how it deletes the jobs, the status their jobs are in beforehand).
PATHS: dict[str, tuple[Callable[[Any, list[int]], None], str]] = {
    "batched acknowledgement, delete_jobs": (_ack_deleting, "doing"),
    "procrastinate_finish_job_v1, delete_job": (_finish_function, "doing"),
    "procrastinate_cancel_job_v1, delete_job": (_cancel_function, "todo"),
    "Procrastinate's delete_old_jobs": (_delete_old_jobs, "succeeded"),
    "retention (DELETE_FINISHED_JOBS)": (_retention, "succeeded"),
    "jobs delete --all (bulk.DELETE)": (_bulk_delete, "succeeded"),
    "TRUNCATE procrastinate_jobs CASCADE": (_truncate, "succeeded"),
}


@pytest.mark.parametrize("path", sorted(PATHS))
def test_every_path_that_deletes_jobs_deletes_their_events(db_url: str, path: str) -> None:
    delete, status = PATHS[path]
    with psycopg.connect(db_url, autocommit=True) as conn:
        doomed = insert_jobs(conn, 5, status)
        # waiting on another queue: no delete path above takes it (but TRUNCATE)
        kept = insert_jobs(conn, 2, "todo", queue="q2")
        assert events(conn, doomed) > 0
        delete(conn, doomed)
        assert conn.execute(
            "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s)", (doomed,)
        ).fetchone() == (0,)
        assert events(conn, doomed) == 0
        if path.startswith("TRUNCATE"):
            assert conn.execute("SELECT count(*) FROM procrastinate_events").fetchone() == (0,)
        else:
            assert events(conn, kept) == 2
            total = conn.execute("SELECT count(*) FROM procrastinate_events").fetchone()
            assert total == (2,)


def test_the_constraint_is_gone_and_the_trigger_is_what_deletes_the_events(db_url: str) -> None:
    with psycopg.connect(db_url) as conn:
        found = conn.execute(
            "SELECT conname FROM pg_constraint WHERE conrelid = 'procrastinate_events'::regclass "
            "AND contype = 'f'"
        ).fetchall()
        assert found == []
        ids = insert_jobs(conn, 3, "succeeded")
        conn.execute("ALTER TABLE procrastinate_jobs DISABLE TRIGGER jobsys_job_events_delete_v1")
        conn.execute("DELETE FROM procrastinate_jobs WHERE id = ANY(%s)", (ids,))
        assert events(conn, ids) == 9  # without the trigger nothing would remove them
        conn.rollback()


def test_a_delete_that_waited_for_a_status_change_removes_its_event(db_url: str) -> None:
    """A job's status change (its ``succeeded`` event) and a delete of the job at the
    same time: the delete waits for the row, and its events statement sees the event
    committed meanwhile (READ COMMITTED, a new snapshot per statement)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        (job,) = insert_jobs(conn, 1, "doing")
    finisher = psycopg.connect(db_url)
    try:
        finisher.execute(
            queries.FINISH_JOBS, {"ids": [job], "statuses": ["succeeded"], "deletes": [False]}
        )
        deleted: list[int] = []

        def delete() -> None:
            with psycopg.connect(db_url, autocommit=True) as other:
                cur = other.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (job,))
                deleted.append(cur.rowcount)

        thread = threading.Thread(target=delete)
        thread.start()
        with psycopg.connect(db_url, autocommit=True) as watch:
            for _ in range(200):  # the delete is waiting for the finisher's row lock
                waiting = watch.execute(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                    "AND query LIKE 'DELETE FROM procrastinate_jobs%%'"
                ).fetchone()
                if waiting == (1,):
                    break
                threading.Event().wait(0.02)
            assert waiting == (1,)
        finisher.commit()
        thread.join(10)
    finally:
        finisher.close()
    assert deleted == [1]
    with psycopg.connect(db_url) as conn:
        assert events(conn, [job]) == 0


def foreign_keys(url: str) -> list[tuple[str, str]]:
    with psycopg.connect(url) as conn:
        return [
            (str(r[0]), str(r[1]))
            for r in conn.execute(
                "SELECT conname, confdeltype FROM pg_constraint "
                "WHERE conrelid = 'procrastinate_events'::regclass AND contype = 'f'"
            ).fetchall()
        ]


def test_downgrade_restores_the_foreign_key(empty_db_url: str) -> None:
    migrate.upgrade(empty_db_url)
    assert foreign_keys(empty_db_url) == []
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        ids = insert_jobs(conn, 2, "succeeded")
        # an event of no job (only by hand): the foreign key could not be added back
        conn.execute("INSERT INTO procrastinate_events (job_id, type) VALUES (-1, 'deferred')")
    migrate.downgrade(empty_db_url, "0028_tick_already_queued")
    assert foreign_keys(empty_db_url) == [(FOREIGN_KEY, "c")]  # ON DELETE CASCADE
    with psycopg.connect(empty_db_url, autocommit=True) as conn:
        assert events(conn, [-1]) == 0
        assert events(conn, ids) == 6
        triggers = conn.execute(
            "SELECT count(*) FROM pg_trigger "
            "WHERE tgname IN ('jobsys_job_events_delete_v1', 'jobsys_job_events_truncate_v1')"
        ).fetchone()
        assert triggers == (0,)
        conn.execute("DELETE FROM procrastinate_jobs WHERE id = %s", (ids[0],))
        assert events(conn, ids) == 3  # the cascade again
    migrate.upgrade(empty_db_url)
    assert foreign_keys(empty_db_url) == []


def function_settings(url: str) -> tuple[bool, list[str] | None]:
    """``jobsys_job_events_delete_v1``'s SECURITY DEFINER flag and its own settings."""
    with psycopg.connect(url) as conn:
        row = conn.execute(
            "SELECT prosecdef, proconfig FROM pg_proc "
            "WHERE oid = 'jobsys_job_events_delete_v1()'::regprocedure"
        ).fetchone()
    assert row is not None
    return bool(row[0]), row[1]


def test_a_role_that_may_delete_jobs_but_not_events_deletes_jobs_and_their_events(
    db_url: str,
) -> None:
    """The cascade of 0028 ran as the events table's owner: a role with DELETE on
    ``procrastinate_jobs`` and no privilege on ``procrastinate_events`` could delete jobs
    (and their events).
    0029's trigger ran as the deleter (permission denied); 0030 runs it as its owner."""
    role = f"jobsys_test_deleter_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role}")
        try:
            conn.execute(f"GRANT SELECT, DELETE ON procrastinate_jobs TO {role}")
            # Procrastinate's own delete trigger (invoker's rights, before 0029 too)
            conn.execute(f"GRANT SELECT, UPDATE ON procrastinate_periodic_defers TO {role}")
            ids = insert_jobs(conn, 2, "succeeded")
            kept = insert_jobs(conn, 1, "succeeded")
            with conn.transaction():
                conn.execute(f"SET LOCAL ROLE {role}")
                deleted = conn.execute(
                    "DELETE FROM procrastinate_jobs WHERE id = ANY(%s)", (ids,)
                ).rowcount
            assert deleted == 2
            assert (events(conn, ids), events(conn, kept)) == (0, 3)
        finally:
            conn.execute("RESET ROLE")
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_the_events_delete_runs_as_owner_on_a_fixed_path_and_downgrade_restores_0029(
    empty_db_url: str,
) -> None:
    migrate.upgrade(empty_db_url)
    assert function_settings(empty_db_url) == (
        True,
        ["search_path=pg_catalog, public, pg_temp"],
    )
    migrate.downgrade(empty_db_url, "0029_events_without_foreign_key")
    assert function_settings(empty_db_url) == (False, None)
    migrate.upgrade(empty_db_url)
    assert function_settings(empty_db_url)[0] is True
