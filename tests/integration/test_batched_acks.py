"""Batched acknowledgement (jobsys.engine.acks): many outcomes in one statement, each
job's error its own. The fault scenarios (kill -9, PostgreSQL restart, failures table
locked with a batch in flight) are in tests/acceptance/test_batched_acks_faults.py."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import psycopg
import pytest
from rt_support import query


def app_with_jobs(db_url: str, task: str, jobs: int, *, pool_size: int) -> Any:
    """``jobs`` jobs of ``task`` waiting on q1 (args ``n`` 1, 2...) and an engine app."""
    import procrastinate

    from jobsys.engine import pool

    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args) "
            "SELECT 'q1', %s, jsonb_build_object('n', n) FROM generate_series(1, %s) n",
            (task, jobs),
        )
    return procrastinate.App(connector=pool.connector(db_url, min_size=1, max_size=pool_size))


async def run_lane(app: Any, *, concurrency: int, jobs: int, during: Any = None) -> Any:
    """A lane of ``app`` on queue q1 until it has done ``jobs`` jobs; the stopped worker.
    ``during``: awaited with the worker once it is started (before it claims)."""
    from jobsys.config.loader import LaneSpec
    from jobsys.engine.worker import LaneWorker

    async with app.open_async():
        worker = LaneWorker(
            app,
            LaneSpec("l", ("q1",), concurrency, 60.0),
            process_id="p",
            poll_interval_seconds=0.2,
            shutdown_grace_seconds=5,
            worker_middleware=[],
        )
        run = asyncio.create_task(worker.run())
        try:
            if during is not None:
                await during(worker)
            for _ in range(300):
                await asyncio.sleep(0.1)
                if worker.jobs_done == jobs:
                    break
        finally:
            worker.stop()
            await asyncio.wait_for(run, 20)
    assert worker.jobs_done == jobs
    return worker


async def test_a_lane_writes_its_outcomes_in_batches(db_url: str) -> None:
    """200 no-op jobs at concurrency 10: every outcome recorded, succeeded and failed
    alike, in far fewer statements than jobs; Procrastinate's status events too."""
    app = app_with_jobs(db_url, "ack.t", 200, pool_size=12)

    @app.task(name="ack.t", queue="q1")
    async def t(n: int) -> None:
        if n % 10 == 0:
            raise RuntimeError("every tenth fails")

    worker = await run_lane(app, concurrency=10, jobs=200)
    assert worker.acks.outcomes == 200
    # A batch is written when every running job waits for it: about one per claim.
    assert worker.acks.batches <= 200 / 3, worker.acks.batches
    with psycopg.connect(db_url) as conn:
        by_status = dict(
            conn.execute(
                "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1"
            ).fetchall()
        )
        ended = conn.execute(
            "SELECT count(DISTINCT job_id) FROM procrastinate_events "
            "WHERE type IN ('succeeded', 'failed')"
        ).fetchone()
    assert by_status == {"succeeded": 180, "failed": 20}
    assert ended == (200,)


async def test_a_job_no_longer_doing_fails_alone_in_its_batch(db_url: str) -> None:
    """Procrastinate refuses to finish a job that is not ``doing``: that job's write
    fails, the others of the same batch are written."""
    import procrastinate

    from jobsys.engine import pool
    from jobsys.engine.acks import FinishBatcher
    from jobsys.engine.api import ConnectorException

    with psycopg.connect(db_url, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
                "SELECT 'q1', 'ack.t', '{}', 'doing' FROM generate_series(1, 3) RETURNING id"
            ).fetchall()
        ]
        conn.execute("UPDATE procrastinate_jobs SET status = 'failed' WHERE id = %s", (ids[1],))
    app = procrastinate.App(connector=pool.connector(db_url, min_size=1, max_size=2))
    async with app.open_async():
        acks = FinishBatcher(app.connector, waiting_jobs=lambda: 3)
        results = await asyncio.gather(
            *(acks.finish(i, "succeeded") for i in ids), return_exceptions=True
        )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], ConnectorException)
    got = dict(query(db_url, "SELECT id, status::text FROM procrastinate_jobs"))
    assert got == {ids[0]: "succeeded", ids[1]: "failed", ids[2]: "succeeded"}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.mark.parametrize("level", [logging.WARNING, logging.DEBUG])
async def test_job_log_records_are_built_only_when_emitted(
    db_url: str, level: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Procrastinate builds each per-job record's ``extra`` (the job's fields) before it
    asks its logger, three times a job; the lane builds it only when a record of that
    level is emitted (LaneWorker._log_extra), and in full then."""
    from procrastinate import jobs

    from jobsys import engine

    built: list[Any] = []
    log_context = jobs.Job.log_context
    call_strings: list[Any] = []
    call_string = jobs.Job.__dict__["call_string"].func

    def counted(self: Any) -> Any:
        built.append(self.id)
        return log_context(self)

    def counted_call_string(self: Any) -> Any:
        call_strings.append(self.id)
        return call_string(self)

    monkeypatch.setattr(jobs.Job, "log_context", counted)
    monkeypatch.setattr(jobs.Job, "call_string", property(counted_call_string))
    app = app_with_jobs(db_url, "logx.t", 5, pool_size=4)

    @app.task(name="logx.t", queue="q1")
    async def t(n: int) -> None:
        if n == 1:
            raise RuntimeError("the first fails")

    logger = logging.getLogger(engine.WORKER_LOGGER)
    handler, before = Records(), logger.level
    logger.setLevel(level)
    logger.addHandler(handler)
    try:
        await run_lane(app, concurrency=2, jobs=5)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)
    per_job = [r for r in handler.records if getattr(r, "job", None) is not None]
    actions = [getattr(r, "action", None) for r in per_job]
    # The failed job's ERROR record passes at WARNING too, with the job's fields.
    failed = next(r for r in per_job if getattr(r, "action", None) == "job_error")
    assert failed.job["task_name"] == "logx.t"  # type: ignore[attr-defined]
    if level == logging.WARNING:
        assert actions == ["job_error"]
        assert len(built) == 1, built  # only the record that was emitted
        # The messages too (LaneWorker._process_job): only the failed job's.
        assert set(call_strings) == {1}, call_strings
    else:
        assert actions.count("start_job") == 5
        assert actions.count("job_success") == 4
        assert len(built) >= 5 * 3 - 1


@pytest.mark.parametrize("write_fails", [False, True])
async def test_a_job_cancelled_while_its_outcome_is_written_waits_for_the_write(
    db_url: str, write_fails: bool
) -> None:
    """A final outcome is written without a task of its own (LaneWorker._persist_final)
    but as shielded as Procrastinate's persist task: a job cancelled while its batch is
    being written ends only after the write committed, and counts as done; a write that
    fails on a connection error meanwhile is retried until it commits."""
    from jobsys.engine.api import ConnectorException

    app = app_with_jobs(db_url, "ackc.t", 1, pool_size=4)

    @app.task(name="ackc.t", queue="q1")
    async def t(n: int) -> None:
        return None

    gate, writing = asyncio.Event(), asyncio.Event()
    writes: list[str] = []

    async def cancel_while_written(worker: Any) -> None:
        execute = worker.acks.connector.execute_query_all_async

        async def held(*args: Any, **kwargs: Any) -> Any:
            writing.set()
            await gate.wait()
            if write_fails and not writes:
                writes.append("refused")
                raise ConnectorException("connection lost") from psycopg.OperationalError("x")
            rows = await execute(*args, **kwargs)
            writes.append("committed")
            return rows

        worker.acks.connector = type("Held", (), {"execute_query_all_async": staticmethod(held)})
        await asyncio.wait_for(writing.wait(), 10)
        [job_task] = list(worker._running_jobs)
        job_task.cancel()
        await asyncio.sleep(0.05)
        assert not job_task.done()  # waits for its outcome's write
        gate.set()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(asyncio.shield(job_task), 10)
        assert writes[-1] == "committed"

    await run_lane(app, concurrency=1, jobs=1, during=cancel_while_written)
    assert writes == (["refused", "committed"] if write_fails else ["committed"])
    assert query(db_url, "SELECT status::text FROM procrastinate_jobs") == [("succeeded",)]


def test_the_set_based_finish_follows_procrastinates_rules_row_for_row(db_url: str) -> None:
    """``queries.FINISH_JOBS`` repeats the rules of ``procrastinate_finish_job_v1``. For
    every starting state x outcome x delete, a twin job is finished by Procrastinate's
    function: both end the same (row, status, attempts, abort flag, status events), and
    where the function raises, the batch leaves the job alone and does not return it."""
    from jobsys.engine import queries

    starts = [
        ("todo", 0, False), ("doing", 0, False), ("doing", 2, True),
        ("succeeded", 1, False), ("failed", 1, False), ("aborted", 1, False),
    ]  # fmt: skip
    cases = [
        (start, outcome, delete)
        for start in starts
        for outcome in ("succeeded", "failed", "aborted", "doing")
        for delete in (False, True)
    ]
    insert = (
        "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status, attempts,"
        " abort_requested) VALUES ('q1', 'ack.t', '{}', %s, %s, %s) RETURNING id"
    )
    state = (
        "SELECT status::text, attempts, abort_requested,"
        " ARRAY(SELECT type::text FROM procrastinate_events e WHERE e.job_id = j.id"
        "       ORDER BY e.id)"
        " FROM procrastinate_jobs j WHERE id = %s"
    )
    with psycopg.connect(db_url, autocommit=True) as conn:
        twins = []
        for (status, attempts, abort), _outcome, _delete in cases:
            abort = abort and status == "doing"  # the table's check constraint
            ours = conn.execute(insert, (status, attempts, abort)).fetchone()
            theirs = conn.execute(insert, (status, attempts, abort)).fetchone()
            assert ours is not None and theirs is not None
            twins.append((ours[0], theirs[0]))
        written = {
            row[0]
            for row in conn.execute(
                queries.FINISH_JOBS,
                {
                    "ids": [ours for ours, _ in twins],
                    "statuses": [outcome for _, outcome, _ in cases],
                    "deletes": [delete for _, _, delete in cases],
                },
            ).fetchall()
        }
        for (ours, theirs), (start, outcome, delete) in zip(twins, cases, strict=True):
            try:
                conn.execute(
                    queries.FINISH_JOB, {"id": theirs, "status": outcome, "delete": delete}
                )
            except psycopg.errors.RaiseException:
                raised = True
            else:
                raised = False
            assert (ours not in written) == raised, (start, outcome, delete)
            ended = [conn.execute(state, (job,)).fetchone() for job in (ours, theirs)]
            assert ended[0] == ended[1], (start, outcome, delete, ended)
        assert len(written) == 3 * 3 * 2  # todo, doing, doing+abort x end statuses x delete


async def test_a_second_outcome_for_one_job_in_a_batch_fails_alone(db_url: str) -> None:
    """Two outcomes for one job in one batch (a caller's mistake): the first is written,
    the second gets Procrastinate's error as a second single write did, not a success."""
    import procrastinate

    from jobsys.engine import pool
    from jobsys.engine.acks import FinishBatcher
    from jobsys.engine.api import ConnectorException

    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, args, status) "
            "VALUES ('q1', 'ack.t', '{}', 'doing') RETURNING id"
        ).fetchone()
    assert row is not None
    app = procrastinate.App(connector=pool.connector(db_url, min_size=1, max_size=2))
    async with app.open_async():
        acks = FinishBatcher(app.connector, waiting_jobs=lambda: 2)
        results = await asyncio.gather(
            acks.finish(row[0], "succeeded"), acks.finish(row[0], "failed"),
            return_exceptions=True,
        )  # fmt: skip
    assert results[0] is None and isinstance(results[1], ConnectorException), results
    got = query(db_url, "SELECT status::text, attempts FROM procrastinate_jobs")
    assert got == [("succeeded", 1)]


def _rows_read(plan: dict[str, Any], table: str = "procrastinate_jobs") -> int:
    own = 0
    if plan.get("Relation Name") == table and "Scan" in plan["Node Type"]:
        own = int(plan["Actual Rows"]) * int(plan["Actual Loops"])
    return own + sum(_rows_read(child, table) for child in plan.get("Plans", []))


def test_an_acknowledgement_reads_its_own_jobs_whatever_the_statistics(db_url: str) -> None:
    """The job table analyzed while no job waited (a quiet night), then a backlog: joined
    as two sets, the planner expected one waiting row and walked the partial
    todo/doing index, all 40,000 waiting jobs, for an acknowledgement of 10 (85 ms
    instead of 2 on a default-settings server; a 20,000-job drain ran at 800 jobs/s)."""
    from jobsys.engine import queries

    with psycopg.connect(db_url) as conn:
        conn.execute(
            "INSERT INTO procrastinate_jobs (queue_name, task_name, status) "
            "SELECT 'q1', 't', 'succeeded' FROM generate_series(1, 40000)"
        )
        conn.commit()
        conn.execute("ANALYZE procrastinate_jobs")
        conn.commit()
        ids = [row[0] for row in conn.execute("SELECT id FROM procrastinate_jobs ORDER BY id")]
        conn.execute("UPDATE procrastinate_jobs SET status = 'doing'")
        done = ids[:10]
        cur = conn.execute(
            "EXPLAIN (ANALYZE, FORMAT JSON) " + queries.FINISH_JOBS,
            {"ids": done, "statuses": ["succeeded"] * 10, "deletes": [False] * 10},
        )
        (plan,) = cur.fetchone()[0]
        conn.rollback()
    # each of the 10 jobs looked up by its id, for the lock then for the write
    assert _rows_read(plan["Plan"]) <= 2 * len(done), _rows_read(plan["Plan"])
