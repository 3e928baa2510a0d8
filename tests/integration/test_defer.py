"""Deferring: validation before any write, transactional defer, queueing locks."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from rt_support import WorkerProcess, environment, events, query, wait_until, write_app

from jobsys.errors import AlreadyQueuedError, UsageError, already_queued


def count_jobs(db_url: str) -> int:
    return int(query(db_url, "SELECT count(*) FROM procrastinate_jobs")[0][0])


@pytest.mark.parametrize(
    ("args", "extra", "message"),
    [
        ('{"account_id": NaN}', [], "args.account_id: NaN is not valid JSON"),
        ('{"account_id": 1, "items": [1, 2, 3, Infinity]}', [], "args.items[3]: Infinity"),
        ('{"account_id": "a\\u0000b"}', [], "args.account_id: NUL characters"),
        ("[1, 2]", [], "args: must be a JSON object, not an array"),
        ('{"account_id": 1', [], "--args is not valid JSON"),
        ('{"account_id": 1, "account_id": 2}', [], "key 'account_id' appears twice"),
        ('{"acount_id": 1}', [], "does not fit task demo.refresh_profile"),
        ('{"account_id": "%s"}' % ("x" * 70_000), [], "more than the limit of 65536"),
        ('{"account_id": 1}', ["--queue", "profilez"], "did you mean 'profiles'"),
        ('{"account_id": 1}', ["--in", "10 parsecs"], "is not a duration"),
        ('{"account_id": 1}', ["--in", "10m", "--at", "2030-01-01"], "not both"),
        ('{"account_id": 1}', ["--at", "tomorrow"], "is not an ISO-8601 time"),
        ('{"account_id": 1}', ["--priority", "99999999999"], "priority: 99999999999 is out of"),
        ('{"account_id": 1}', ["--priority", "-2147483649"], "from -2147483648 to 2147483647"),
        ('{"account_id": "\\ud800"}', [], "args.account_id: a lone surrogate (\\ud800)"),
        ('{"a": {"\\udfff": 1}}', [], "args.a: a key contains a lone surrogate (\\udfff)"),
        ('{"a": ' * 5000 + "1" + "}" * 5000, [], "--args: nested more than 64 levels deep"),
        ("[" * 5000 + "]" * 5000, [], "--args: nested more than 64 levels deep"),
    ],
)
def test_bad_input_exits_2_and_inserts_nothing(  # type: ignore[no-untyped-def]
    cli, db_url: str, args: str, extra: list[str], message: str
) -> None:
    result = cli("--database-url", db_url, "defer", "demo.refresh_profile", "--args", args, *extra)
    assert result.exit_code == 2, result
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert count_jobs(db_url) == 0


def test_a_misspelt_argument_is_named_with_the_missing_one(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    args = '{"story_id": 1, "acount_id": 8812}'
    result = cli("--database-url", db_url, "defer", "demo.story.download", "--args", args)
    assert result.exit_code == 2, result
    assert (
        "args: does not fit task demo.story.download: unknown argument 'acount_id' "
        "(did you mean 'account_id'?); missing 'account_id'"
    ) in result.stderr
    assert count_jobs(db_url) == 0


def test_unknown_task_exits_2(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "defer", "demo.refresh_profil", "--args", "{}")
    assert result.exit_code == 2
    assert "unknown task 'demo.refresh_profil'" in result.stderr
    assert "Did you mean 'demo.refresh_profile'" in result.stderr
    assert count_jobs(db_url) == 0


def test_defer_prints_id_and_json(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    result = cli(
        "--database-url", db_url, "defer", "demo.refresh_profile", "--args", '{"account_id": 7}'
    )
    assert result.exit_code == 0, result.stderr
    first = int(result.stdout.strip())
    result = cli(
        "--database-url", db_url, "defer", "demo.refresh_profile",
        "--args", '{"account_id": 8}', "--in", "10m", "--lock", "acct-8", "--json",
    )  # fmt: skip
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["job_id"] == first + 1
    assert (data["queue"], data["lane"], data["lock"]) == ("profiles", "base", "acct-8")
    due = datetime.fromisoformat(data["scheduled_at"].replace("Z", "+00:00"))
    assert 590 < (due - datetime.now(UTC)).total_seconds() <= 600
    rows = query(db_url, "SELECT args, lock FROM procrastinate_jobs ORDER BY id")
    assert rows == [({"account_id": 7}, None), ({"account_id": 8}, "acct-8")]


def test_queueing_lock_conflict_is_a_clear_error(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    """The refusal names the waiting job and what to do with it (operator walk-through:
    it said only that a job with the lock was waiting)."""
    base = ["--database-url", db_url, "defer", "demo.refresh_profile"]
    args = ["--args", '{"account_id": 1}', "--queueing-lock", "refresh-1"]
    first = cli(*base, *args)
    assert first.exit_code == 0
    waiting = int(first.stdout)
    result = cli(*base, *args)
    assert result.exit_code == 2
    stderr = " ".join(result.stderr.split())
    assert (
        f"job {waiting} (demo.refresh_profile) is already waiting in the queue with "
        "queueing lock 'refresh-1'; nothing was deferred" in stderr
    )
    assert f"`jobsys jobs show {waiting}`" in stderr
    assert f"`jobsys jobs cancel {waiting}`" in stderr
    assert "Traceback" not in result.stderr
    assert count_jobs(db_url) == 1


async def test_queueing_lock_conflict_in_code_carries_the_waiting_job(
    api_env: dict[str, str], db_url: str
) -> None:
    """``jobsys.defer(..., queueing_lock=K)``: the error's ``job_id`` and ``task`` are the
    waiting job's, read on the error path; a lock no job waits under (it started or went
    before it could be read) is said without an id, and a failed look-up (a closed
    connection) loses the id but never the refusal."""
    import jobsys
    from jobsys.jobs.enqueue import waiting_with_queueing_lock

    job_id = await jobsys.defer("rt.sleep", {"tag": "a"}, queueing_lock="r-2")
    with pytest.raises(AlreadyQueuedError) as refused:
        await jobsys.defer("rt.sleep", {"tag": "b"}, queueing_lock="r-2")
    assert (refused.value.job_id, refused.value.task) == (job_id, "rt.sleep")
    assert f"job {job_id} (rt.sleep) is already waiting" in refused.value.message
    assert f"`jobsys jobs show {job_id}`" in (refused.value.hint or "")

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as conn:
        assert await waiting_with_queueing_lock(conn, "r-2") == (job_id, "rt.sleep")
        # The job started between the refusal and the look-up: said without an id.
        await conn.execute("UPDATE procrastinate_jobs SET status = 'doing' WHERE id = %s", [job_id])
        assert await waiting_with_queueing_lock(conn, "r-2") is None
    assert await waiting_with_queueing_lock(conn, "r-2") is None  # closed: no raise
    gone = already_queued("r-2", None)
    assert gone.job_id is None
    assert "has started or gone since" in gone.message
    assert count_jobs(db_url) == 1


def test_a_connection_lost_mid_defer_exits_69_saying_the_job_may_be_in(  # type: ignore[no-untyped-def]
    cli, db_url: str
) -> None:
    """`jobsys defer` whose backend is terminated while its insert waits on a lock: exit
    69 as for an unreachable database, but the message says the connection was lost
    and the job may have been inserted (what to check), not "cannot connect"."""
    import threading

    stop = threading.Event()

    def terminate_the_waiting_defer() -> None:
        with psycopg.connect(db_url) as locker:
            locker.execute("LOCK TABLE procrastinate_jobs IN EXCLUSIVE MODE")
            deadline = time.monotonic() + 20
            while not stop.is_set() and time.monotonic() < deadline:
                rows = query(
                    db_url,
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                    " AND pid <> %s",
                    (locker.info.backend_pid,),
                )
                if rows:
                    break
                time.sleep(0.02)
            locker.rollback()

    killer = threading.Thread(target=terminate_the_waiting_defer)
    killer.start()
    try:
        time.sleep(0.2)  # the lock is held
        result = cli(
            "--database-url", db_url, "defer", "demo.refresh_profile", "--args", '{"account_id": 1}'
        )  # fmt: skip
    finally:
        stop.set()
        killer.join(30)
    assert result.exit_code == 69, result
    assert "lost the connection to the database at" in result.stderr
    assert "while deferring" in result.stderr
    assert "cannot connect" not in result.stderr
    assert "may have inserted the job" in result.stderr
    assert "jobsys jobs list --task demo.refresh_profile" in result.stderr
    assert "Traceback" not in result.stderr
    result = cli("--database-url", "postgresql://postgres@127.0.0.1:1/nowhere", "defer",
                 "demo.refresh_profile", "--args", '{"account_id": 1}')  # fmt: skip
    assert result.exit_code == 69, result
    assert "cannot connect to the database at" in result.stderr


@pytest.fixture
def api_env(
    db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """The Python API on the test topology (``rt_tasks``), as in an operator's script."""
    import importlib

    from jobsys.config import load
    from jobsys.jobs import defer

    env = environment(tmp_path, db_url, write_app(tmp_path, poll=30))
    monkeypatch.setenv("RT_LOG", env["RT_LOG"])
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("rt_tasks")
    # The registry is process-wide (other tests load the demo): configure directly
    # rather than through load_config's check of every registered task.
    defer.configure(load(Path(env["JOBSYS_CONFIG_DIR"])), url=db_url)
    yield env
    defer.deactivate()
    from jobsys import tasks

    for name in [n for n in tasks.registry() if n.startswith("rt.")]:
        tasks.unregister(name)
    sys.modules.pop("rt_tasks", None)


async def test_api_validation_names_the_key_path(api_env: dict[str, str], db_url: str) -> None:
    import jobsys

    bad = [
        ({"tag": "x", "seconds": float("nan")}, "args.seconds: NaN is not valid JSON"),
        ({"tag": ("a", "b")}, "args.tag: tuple is not a JSON type"),
        ({"tag": datetime.now(UTC)}, "args.tag: datetime is not a JSON type"),
        ({"tag": {"deep": [{1: "x"}]}}, "args.tag.deep[0]: key 1 is int"),
        ({"tag": {"odd key": float("inf")}}, 'args.tag["odd key"]: Infinity'),
        ({"tag": "x", "p": "\ud800"}, "args.p: a lone surrogate"),
    ]
    for args, message in bad:
        with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("(", r"\(")):
            await jobsys.defer("rt.sleep", args)
    with pytest.raises(
        UsageError, match=r"unknown argument 'secnds' \(did you mean 'seconds'\?\)$"
    ):
        await jobsys.defer("rt.sleep", {"tag": "a", "secnds": 1})
    with pytest.raises(
        UsageError, match=r"unknown argument 'tg' \(did you mean 'tag'\?\); missing 'tag'$"
    ):
        await jobsys.defer_many("rt.sleep", [{"tg": "a"}])
    with pytest.raises(UsageError, match=r"args\[1\]\.seconds: NaN"):
        await jobsys.defer_many("rt.sleep", [{"tag": "a"}, {"tag": "b", "seconds": float("nan")}])
    with pytest.raises(UsageError, match="unknown queue 'nope'"):
        await jobsys.defer("rt.sleep", {"tag": "a"}, queue="nope")
    with pytest.raises(UsageError, match=r"^priority: 2147483648 is out of range"):
        await jobsys.defer_many("rt.sleep", [{"tag": "a"}], priority=2**31)
    assert count_jobs(db_url) == 0
    ids = await jobsys.defer_many(
        "rt.sleep", [{"tag": "a"}, {"tag": "b"}], schedule_in=60, priority=2**31 - 1
    )
    assert len(ids) == 2 and ids[1] == ids[0] + 1
    assert count_jobs(db_url) == 2


async def test_defer_in_the_callers_transaction(
    api_env: dict[str, str], db_url: str, tmp_path: Path
) -> None:
    import jobsys

    worker = WorkerProcess(api_env, tmp_path, "--lane", "base")
    try:
        worker.wait_for_output("worker_ready")
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            job_id = await jobsys.defer("rt.sleep", {"tag": "rolled_back"}, connection=conn)
            assert job_id > 0
            assert count_jobs(db_url) == 0  # not visible outside the transaction
            await conn.rollback()
        assert count_jobs(db_url) == 0

        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await jobsys.defer("rt.sleep", {"tag": "kept"}, queueing_lock="k", connection=conn)
            # A conflict inside the caller's transaction leaves it usable (savepoint).
            with pytest.raises(AlreadyQueuedError) as refused:
                await jobsys.defer("rt.sleep", {"tag": "dup"}, queueing_lock="k", connection=conn)
            # The waiting job (this transaction's own) is named, read in a savepoint.
            assert refused.value.job_id is not None
            await conn.execute("SELECT 1")
            time.sleep(0.5)
            assert events(tmp_path) == []  # the worker has not seen it before commit
            committed_at = time.time()
            await conn.commit()
        started = wait_until(
            lambda: [e for e in events(tmp_path) if e[:2] == ("start", "kept")], 10, "pickup"
        )
        assert started[0][2] - committed_at < 2.0  # NOTIFY on commit, not the 30 s poll
        assert [e[1] for e in events(tmp_path) if e[0] == "start"] == ["kept"]
        worker.signal()
        assert worker.wait(20) == 0, worker.output()
    finally:
        worker.kill()


def test_sync_defer_outside_a_worker(api_env: dict[str, str], db_url: str) -> None:
    import jobsys

    job_id = jobsys.defer_sync("rt.sleep", {"tag": "s"}, priority=5)
    rows = query(db_url, "SELECT id, priority, args FROM procrastinate_jobs")
    assert rows == [(job_id, 5, {"tag": "s"})]
    assert json.dumps(rows[0][2]) == '{"tag": "s"}'


async def test_defer_announces_jobs_changed_on_commit_only(
    api_env: dict[str, str], db_url: str
) -> None:
    import jobsys

    async with await psycopg.AsyncConnection.connect(db_url, autocommit=True) as listener:
        await listener.execute("LISTEN jobsys_events")
        async with await psycopg.AsyncConnection.connect(db_url) as conn:
            await jobsys.defer("rt.sleep", {"tag": "gone"}, connection=conn)
            await conn.rollback()
            ids = await jobsys.defer_many("rt.sleep", [{"tag": "a"}, {"tag": "b"}], connection=conn)
            await conn.commit()
        received = []
        async for note in listener.notifies(timeout=2):
            received.append(json.loads(note.payload))
        assert received == [{"topic": "jobs_changed", "deferred": 2, "ids": ids}]
