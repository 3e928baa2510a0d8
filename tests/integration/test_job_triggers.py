"""Migration 0024's per-statement job triggers do what Procrastinate's per-row ones did
(real PostgreSQL): the same status events for every transition, one ``deferred``
event per inserted job, and a ``job_inserted`` wake-up on each channel that
Procrastinate's listeners (and jobsys's) parse."""

from __future__ import annotations

import itertools
import json
from typing import Any

import psycopg

from jobsys.engine import channels

STATUSES = ("todo", "doing", "succeeded", "failed", "cancelled", "aborted")

#: Procrastinate 3.10's row trigger, as its schema file creates it.
PROCRASTINATE_UPDATE_TRIGGER = (
    "CREATE TRIGGER procrastinate_trigger_status_events_update_v1 "
    "AFTER UPDATE OF status ON procrastinate_jobs FOR EACH ROW "
    "EXECUTE PROCEDURE procrastinate_trigger_function_status_events_update_v1()"
)


def insert_jobs(conn: Any, statuses: list[str]) -> list[int]:
    return [
        int(r[0])
        for r in conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
            "SELECT 'q1', 't', '{}', s::procrastinate_job_status FROM unnest(%s::text[]) s "
            "RETURNING id",
            (statuses,),
        ).fetchall()
    ]


def events_of(conn: Any, ids: list[int]) -> list[list[str]]:
    by_job: dict[int, list[str]] = {i: [] for i in ids}
    for job_id, kind in conn.execute(
        "SELECT job_id, type::text FROM procrastinate_events WHERE job_id = ANY(%s) "
        "AND type <> 'deferred' ORDER BY id",
        (ids,),
    ).fetchall():
        by_job[job_id].append(kind)
    return [by_job[i] for i in ids]


def transition_events(conn: Any, pairs: list[tuple[str, str]]) -> list[list[str]]:
    """Jobs in each pair's first status, all moved to the second in one UPDATE."""
    ids = insert_jobs(conn, [old for old, _ in pairs])
    conn.execute(
        "UPDATE procrastinate_jobs j SET status = t.new::procrastinate_job_status "
        "FROM unnest(%s::bigint[], %s::text[]) AS t(id, new) WHERE j.id = t.id",
        (ids, [new for _, new in pairs]),
    )
    return events_of(conn, ids)


def test_every_status_transition_gives_procrastinates_event(db_url: str) -> None:
    """Each (old, new) pair, all in one statement, with jobsys's trigger and then with
    Procrastinate's own (re-created in the same transaction): the same events."""
    pairs = [
        (old, new)
        for old, new in itertools.product(STATUSES, STATUSES)
        if not (old == "todo" and new == "aborted")  # no such row: the abort check
    ]
    with psycopg.connect(db_url) as conn:
        ours = transition_events(conn, pairs)
        conn.execute("ALTER TABLE procrastinate_jobs DISABLE TRIGGER jobsys_job_events_update_v1")
        conn.execute(PROCRASTINATE_UPDATE_TRIGGER)
        theirs = transition_events(conn, pairs)
        conn.rollback()
    assert ours == theirs
    assert sum(1 for e in ours if e) == 9  # the transitions Procrastinate names
    # an update that leaves the status alone records nothing
    with psycopg.connect(db_url, autocommit=True) as conn:
        (job,) = insert_jobs(conn, ["doing"])
        conn.execute("UPDATE procrastinate_jobs SET attempts = 3 WHERE id = %s", (job,))
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", (job,))
        assert events_of(conn, [job]) == [[]]


def test_an_insert_records_deferred_and_wakes_each_queue_once(db_url: str) -> None:
    """One statement inserting 5 jobs on q1, 3 on q2 and one already ``doing``: a
    ``deferred`` event per ``todo`` job, and per queue that got jobs one
    ``job_inserted`` on its channel and one on the any-queue channel, which the
    listener parses."""
    with psycopg.connect(db_url, autocommit=True) as listener:
        for channel in ("q1", "q2"):
            listener.execute(f'LISTEN "{channels.queue_channel(channel)}"')
        listener.execute(f'LISTEN "{channels.ANY_QUEUE_CHANNEL}"')
        with psycopg.connect(db_url, autocommit=True) as conn:
            rows = conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
                "SELECT q, 't', '{}', s::procrastinate_job_status FROM unnest(%s::text[], "
                "%s::text[]) AS x(q, s) RETURNING id, queue_name, status::text",
                (["q1"] * 5 + ["q2"] * 3 + ["q1"], ["todo"] * 8 + ["doing"]),
            ).fetchall()
            deferred = conn.execute(
                "SELECT job_id FROM procrastinate_events WHERE type = 'deferred' ORDER BY id"
            ).fetchall()
        todo = [r[0] for r in rows if r[2] == "todo"]
        assert [r[0] for r in deferred] == todo
        got = [(n.channel, json.loads(n.payload)) for n in listener.notifies(timeout=1)]
    by_channel: dict[str, list[dict[str, Any]]] = {}
    for channel, payload in got:
        by_channel.setdefault(channel, []).append(payload)
    assert sorted(by_channel) == sorted(
        [channels.queue_channel("q1"), channels.queue_channel("q2"), channels.ANY_QUEUE_CHANNEL]
    )
    queue_of_job = {r[0]: r[1] for r in rows if r[2] == "todo"}
    for queue in ("q1", "q2"):
        (payload,) = by_channel[channels.queue_channel(queue)]
        assert payload["type"] == channels.JOB_INSERTED
        assert queue_of_job[payload["job_id"]] == queue
    assert len(by_channel[channels.ANY_QUEUE_CHANNEL]) == 2
