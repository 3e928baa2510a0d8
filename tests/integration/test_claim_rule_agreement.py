"""The claim rule is written three times: ``jobsys.engine.queries`` (``DUE_AND_UNLOCKED``
in ``_lane_walk``: CLAIM_JOBS, CLAIM_JOBS_IN_ORDER and the exact limited claim),
migration 0022's PL/pgSQL ``jobsys_claim_limited_v1`` (the one-round-trip limited
claim) and migration 0026's ``jobsys_claim_v1`` (the lane's plain claim,
``queries.CLAIM``). All must take the same jobs in the same order, or a lane claims by
another rule than the one written in Python (real PostgreSQL).

Two checks, each failing when either side changes alone: the installed function's
source contains the Python fragments (aliases renamed), and on the same data (locks,
priorities, schedules, paused and expired pauses, a row another transaction holds,
several queues in a lane) both claims take the same first ``k`` jobs for every ``k``,
which fixes the order too."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from jobsys.engine import queries

LANE = ["qa", "qb", "qc", "qd"]

#: The function's aliases -> the Python text's.
ALIASES = {r"\boj\b": "other_jobs", r"\blq\b": "lane_queue", r"\bpq\b": "per_queue"}


def normalised(sql: str) -> str:
    return re.sub(r"\s+", " ", sql).replace("( ", "(").replace(" )", ")").strip()


#: The functions that repeat the claim rule (migrations 0022 and 0026).
FUNCTIONS = ["jobsys_claim_limited_v1", "jobsys_claim_v1"]


def function_source(conn: Any, name: str) -> str:
    (source,) = conn.execute("SELECT prosrc FROM pg_proc WHERE proname = %s", (name,)).fetchone()
    for pattern, name in ALIASES.items():
        source = re.sub(pattern, name, source)
    return normalised(source)


@pytest.mark.parametrize(
    "fragment",
    [
        queries.DUE_AND_UNLOCKED,
        queries.PAUSE_ACTIVE,
        "ORDER BY jobs.priority DESC, jobs.id ASC",
        "FOR NO KEY UPDATE OF jobs SKIP LOCKED",
        "WHERE pause.queue = lane_queue.name AND " + queries.PAUSE_ACTIVE,
    ],
    ids=["due_and_unlocked", "pause_active", "walk_order", "row_lock", "pause_probe"],
)
@pytest.mark.parametrize("function", FUNCTIONS)
def test_the_function_repeats_the_claim_rule_word_for_word(
    db_url: str, fragment: str, function: str
) -> None:
    """Also in the Python claim (the same fragment, the same form of the walk)."""
    with psycopg.connect(db_url) as conn:
        source = function_source(conn, function)
    claim = normalised(queries.CLAIM_JOBS)
    assert normalised(fragment) in claim
    assert normalised(fragment) in source, (
        f"{function} no longer repeats this part of jobsys.engine.queries' claim rule: "
        "change both (a new migration replaces the function)"
    )


def test_both_orders_match_the_functions_order() -> None:
    """The function orders the merged walk by (position if in order, priority desc, id):
    BY_PRIORITY and BY_QUEUE_ORDER say the same."""
    assert queries.BY_PRIORITY == "per_queue.priority DESC, per_queue.id ASC"
    assert queries.BY_QUEUE_ORDER == "lane_queue.position, " + queries.BY_PRIORITY


def job(
    conn: Any,
    queue: str,
    priority: int = 0,
    *,
    lock: str | None = None,
    status: str = "todo",
    later: bool = False,
    earlier: bool = False,
) -> int:
    scheduled = (
        "now() + interval '1 hour'"
        if later
        else "now() - interval '1 minute'"
        if earlier
        else "NULL"
    )
    (job_id,) = conn.execute(
        "INSERT INTO procrastinate_jobs (queue_name, task_name, priority, lock, args, "
        f"status, scheduled_at) VALUES (%s, 'demo.noop', %s, %s, %s, %s, {scheduled}) "
        "RETURNING id",
        (queue, priority, lock, json.dumps({"n": priority}), status),
    ).fetchone()
    return int(job_id)


@pytest.fixture
def lane_data(db_url: str) -> Iterator[tuple[str, int, int]]:
    """The lane's jobs (committed); one due job of qb held by another transaction.
    Yields the URL, a worker id and how many jobs either claim may take at most."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        (worker_id,) = conn.execute(
            "INSERT INTO procrastinate_workers DEFAULT VALUES RETURNING id"
        ).fetchone()
        for priority in (0, 0, 5, -1, 2):
            job(conn, "qa", priority)
        job(conn, "qa", 10, later=True)  # not due
        job(conn, "qa", 2, earlier=True)  # due
        job(conn, "qa", 0, status="doing", lock="L1")
        job(conn, "qa", 9, lock="L1")  # its lock runs
        job(conn, "qb", 1, lock="L2")  # behind the next (higher priority)
        job(conn, "qb", 3, lock="L2")
        job(conn, "qa", 4, lock="L3")
        job(conn, "qb", 4, lock="L3")  # behind the one of qa (same priority, lower id)
        job(conn, "qb", 8, lock="L4", later=True)  # not due, yet waiting ahead of:
        job(conn, "qb", 6, lock="L4")  # (the lock rule reads priorities, not schedules)
        for priority in (0, 2, 2, 7):
            job(conn, "qb", priority)
        held = job(conn, "qb", 50)
        job(conn, "qc", 100)  # paused queue
        job(conn, "qd", 1)  # its pause has expired
        job(conn, "qd", 3, status="failed")
        job(conn, "qz", 100)  # not in the lane
        conn.execute(
            "INSERT INTO jobsys_queue_pauses (queue, paused_by, target) VALUES ('qc', 't', 'qc')"
        )
        conn.execute(
            "INSERT INTO jobsys_queue_pauses (queue, paused_by, target, until) "
            "VALUES ('qd', 't', 'qd', now() - interval '1 second')"
        )
        with psycopg.connect(db_url) as holder:
            holder.execute(
                "SELECT 1 FROM procrastinate_jobs WHERE id = %s FOR NO KEY UPDATE", (held,)
            )
            yield db_url, int(worker_id), 30
            holder.rollback()


def plain_claim(conn: Any, worker_id: int, limit: int, *, in_order: bool) -> set[int]:
    sql = queries.CLAIM_JOBS_IN_ORDER if in_order else queries.CLAIM_JOBS
    rows = conn.execute(sql, {"queues": LANE, "worker_id": worker_id, "limit": limit})
    return {int(r[0]) for r in rows.fetchall()}


def function_claim(conn: Any, worker_id: int, limit: int, *, in_order: bool) -> list[int]:
    """The function without limits (every candidate fits), in its rank order."""
    none: list[str] = []
    rows = conn.execute(
        queries.CLAIM_LIMITED,
        {
            "queues": LANE,
            "worker_id": worker_id,
            "limit": limit,
            "in_order": in_order,
            "prefixes": none,
            "limit_kinds": none,
            "limit_targets": none,
            "limit_prefixes": none,
            "limit_keys": none,
            "concurrency": [],
            "rate_count": [],
            "span": [],
            "pad": 0.0,
        },
    ).fetchall()
    taken = [r for r in rows if r[0] is not None]
    assert [int(r[-1]) for r in rows if r[0] is None] == [0]  # nothing held back
    return [int(r[0]) for r in sorted(taken, key=lambda r: r[-2])]


def lane_claim(conn: Any, worker_id: int, limit: int, *, in_order: bool) -> list[int]:
    """The lane's claim (queries.CLAIM, migration 0026's function), in claim order."""
    params = {"queues": LANE, "worker_id": worker_id, "limit": limit, "in_order": in_order}
    rows = conn.execute(queries.CLAIM, params).fetchall()
    rank = {q: i for i, q in enumerate(LANE)} if in_order else {}
    # manager.claim_jobs's order (the function returns the rows unordered).
    rows.sort(key=lambda r: (rank.get(r[8], 0), -r[3], r[0]))
    return [int(r[0]) for r in rows]


@pytest.mark.parametrize("in_order", [False, True], ids=["by_priority", "queue_order"])
def test_the_lanes_claim_function_takes_what_the_python_claim_takes(
    lane_data: tuple[str, int, int], in_order: bool
) -> None:
    """jobsys_claim_v1 against CLAIM_JOBS / CLAIM_JOBS_IN_ORDER (under the planner
    setting the Python text was sent with) and the limited function's order: the same
    first ``k`` jobs for every ``k``."""
    url, worker_id, most = lane_data
    with psycopg.connect(url) as conn:
        everything = function_claim(conn, worker_id, most, in_order=in_order)
        conn.rollback()
        assert 10 < len(everything) < most
        for k in range(1, len(everything) + 2):
            conn.execute(queries.CLAIM_PLANNER)
            plain = plain_claim(conn, worker_id, k, in_order=in_order)
            conn.rollback()
            claimed = lane_claim(conn, worker_id, k, in_order=in_order)
            conn.rollback()
            assert set(claimed) == plain, f"the first {k} jobs differ"
            assert claimed == everything[:k]


@pytest.mark.parametrize("in_order", [False, True], ids=["by_priority", "queue_order"])
def test_both_claims_take_the_same_jobs_in_the_same_order(
    lane_data: tuple[str, int, int], in_order: bool
) -> None:
    url, worker_id, most = lane_data
    with psycopg.connect(url) as conn:
        everything = function_claim(conn, worker_id, most, in_order=in_order)
        conn.rollback()
        assert 10 < len(everything) < most  # the data leaves jobs out for each reason
        for k in range(1, len(everything) + 2):
            plain = plain_claim(conn, worker_id, k, in_order=in_order)
            conn.rollback()
            limited = function_claim(conn, worker_id, k, in_order=in_order)
            conn.rollback()
            assert plain == set(limited), f"the first {k} jobs differ"
            assert limited == everything[:k]
