"""Bulk retry at scale, interruption, and two operators racing on the same failure."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from _retry_support import bulk_failed_jobs, make_issue, sql
from rt_support import report

from jobsys.config.application import load_config
from jobsys.db.connect import connect
from jobsys.retry import engine
from jobsys.retry.service import RetryRequest, retry
from jobsys.settings import Settings

HERE = Path(__file__).resolve().parent
JOBSYS = str(Path(sys.executable).with_name("jobsys"))


def jobsys_env(db_url: str, tmp_path: Path) -> dict[str, str]:
    """The environment of a real ``jobsys`` process that knows the test tasks."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")},
        "JOBSYS_DATABASE_URL": db_url,
        "JOBSYS_CONFIG_DIR": str(HERE.parents[1] / "config"),
        "JOBSYS_HOME": str(tmp_path / "home"),
        "JOBSYS_APP": "jobsys.demo.tasks,_retry_support",
        "PYTHONPATH": str(HERE),
    }


def two_operators_at_once(env: dict[str, str], *argv: str) -> list[Any]:
    """``jobsys ARGV`` run by two operators (op0, op1) released by one barrier."""
    barrier = threading.Barrier(2)
    outputs: list[Any] = [None, None]

    def operator(slot: int) -> None:
        barrier.wait()
        outputs[slot] = subprocess.run(
            [JOBSYS, *argv],
            env={**env, "JOBSYS_OPERATOR": f"op{slot}"},
            capture_output=True,
            text=True,
            check=False,
        )

    threads = [threading.Thread(target=operator, args=(slot,)) for slot in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return outputs


def once_each(db_url: str, failure_ids: list[int]) -> None:
    """Every failure retried exactly once, and its job moved failed -> todo exactly once."""
    per_failure = sql(
        db_url,
        "SELECT failure_id, count(*) AS n FROM jobsys_retry_events WHERE decision = 'retried'"
        " GROUP BY failure_id",
    )
    assert sorted(r["failure_id"] for r in per_failure) == sorted(failure_ids)
    assert {r["n"] for r in per_failure} == {1}
    retried_jobs = sql(
        db_url,
        "SELECT job_id, count(*) AS n FROM procrastinate_events WHERE type = 'retried'"
        " GROUP BY job_id",
    )
    assert len(retried_jobs) == len(failure_ids) and {r["n"] for r in retried_jobs} == {1}
    statuses = sql(
        db_url,
        "SELECT DISTINCT j.status::text AS status FROM procrastinate_jobs j"
        " JOIN jobsys_failures f ON f.job_id = j.id WHERE f.id = ANY(%s)",
        (failure_ids,),
    )
    assert statuses == [{"status": "todo"}]
    # The one retrier is the one recorded (retry_state.retried_by/retried_at), however
    # many refusals (a racing operator's) were decided after it.
    wrong = sql(
        db_url,
        "SELECT f.id FROM jobsys_failures f JOIN jobsys_retry_events e"
        " ON e.failure_id = f.id AND e.decision = 'retried'"
        " WHERE f.id = ANY(%s) AND (f.retry_state->>'retried_by' IS DISTINCT FROM e.actor"
        " OR (f.retry_state->>'retried_at')::timestamptz IS DISTINCT FROM e.created_at)",
        (failure_ids,),
    )
    assert wrong == []


def test_bulk_retry_of_10000_failures_then_rerun(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    issue = make_issue(db_url)
    ids = bulk_failed_jobs(db_url, 10_000, issue_id=issue)
    auth = bulk_failed_jobs(db_url, 3, kind="authentication", issue_id=issue)
    dry = cli(
        "--database-url", db_url, "retry", "--all", "--issue", str(issue), "--dry-run", "--json"
    )
    assert dry.exit_code == 0
    assert dry.json()["counts"] == {"would_retry": 10_000, "skipped_authentication": 3}
    assert sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events") == [{"n": 0}]
    started = time.perf_counter()
    result = cli(
        "--database-url", db_url, "retry", "--all", "--issue", str(issue), "--yes", "--json"
    )
    elapsed = time.perf_counter() - started
    assert result.exit_code == 3  # the authentication failures were refused
    data = result.json()
    assert data["counts"] == {"retried": 10_000, "skipped_authentication": 3}
    assert data["matched"] == 10_003 and len(data["results"]) == 10_003
    assert {r["failure_id"] for r in data["results"] if r["decision"] == "retried"} == set(ids)
    assert all(
        r["new_job_id"] == r["job_id"] for r in data["results"] if r["decision"] == "retried"
    )
    assert sql(db_url, "SELECT count(*) AS n FROM procrastinate_jobs WHERE status = 'failed'") == [
        {"n": 3}
    ]
    once_each(db_url, ids)
    rerun = cli(
        "--database-url", db_url, "retry", "--all", "--issue", str(issue), "--yes", "--json"
    )
    assert rerun.json()["counts"] == {
        "skipped_already_retried": 10_000,
        "skipped_authentication": 3,
    }
    assert len(auth) == 3
    once_each(db_url, ids)
    print(f"bulk retry of 10000: {elapsed:.2f}s")


def test_bulk_retry_killed_half_way_then_rerun(cli, db_url: str, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    issue = make_issue(db_url)
    ids = bulk_failed_jobs(db_url, 10_000, issue_id=issue)
    env = jobsys_env(db_url, tmp_path)
    proc = subprocess.Popen(
        [JOBSYS, "retry", "--all", "--issue", str(issue), "--yes"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while True:  # kill -9 once some chunks are committed, well before the end
        done = sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events")[0]["n"]
        if done >= 1000 or proc.poll() is not None or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = sql(db_url, "SELECT count(*) AS n FROM jobsys_retry_events")[0]["n"]
    assert 0 < done < 10_000, f"{done} decisions before the kill: could not interrupt half way"
    rerun = cli(
        "--database-url", db_url, "retry", "--all", "--issue", str(issue), "--yes", "--json"
    )
    counts = rerun.json()["counts"]
    assert counts == {"retried": 10_000 - done, "skipped_already_retried": done}
    once_each(db_url, ids)


async def test_two_operators_racing_100_times_retry_once(db_url: str) -> None:
    """Two independent connections decide the same failure at the same moment, 100 times."""
    ids = bulk_failed_jobs(db_url, 100)
    async with connect(db_url) as conn_a, connect(db_url) as conn_b:
        for failure_id in ids:
            gate = asyncio.Event()

            async def operator(
                conn: Any, actor: str, failure_id: int = failure_id, gate: Any = gate
            ) -> str:
                await gate.wait()
                decisions = await engine.decide_chunk(
                    conn,
                    [failure_id],
                    actor=actor,
                    batch_id=f"race-{actor}",
                    mode="manual",
                    now=datetime.now(UTC),
                )
                return decisions[0].decision

            racers = [
                asyncio.create_task(operator(conn_a, "alice")),
                asyncio.create_task(operator(conn_b, "bob")),
            ]
            await asyncio.sleep(0)
            gate.set()
            verdicts = await asyncio.gather(*racers)
            assert sorted(verdicts) == ["retried", "skipped_already_retried"]
            winner = "alice" if verdicts[0] == "retried" else "bob"
            [state] = sql(
                db_url, "SELECT retry_state FROM jobsys_failures WHERE id = %s", (failure_id,)
            )
            assert state["retry_state"]["retried_by"] == winner
    rows = sql(db_url, "SELECT decision, count(*) AS n FROM jobsys_retry_events GROUP BY decision")
    assert {r["decision"]: r["n"] for r in rows} == {"retried": 100, "skipped_already_retried": 100}
    once_each(db_url, ids)


async def test_service_level_race_has_no_traceback(settings: Settings, db_url: str) -> None:
    (failure_id,) = bulk_failed_jobs(db_url, 1)
    other = Settings(
        database_url=settings.database_url,
        home=settings.home,
        config_dir=settings.config_dir,
        operator="colleague",
    )
    reports = await asyncio.gather(
        retry(settings, load_config(settings), RetryRequest(ids=(failure_id,))),
        retry(other, load_config(other), RetryRequest(ids=(failure_id,))),
    )
    assert sorted(r.decisions[0].decision for r in reports) == [
        "retried",
        "skipped_already_retried",
    ]


@pytest.mark.slow
def test_two_jobsys_processes_behind_a_barrier(db_url: str, tmp_path: Path) -> None:
    iterations = 3
    ids = bulk_failed_jobs(db_url, iterations)
    env = jobsys_env(db_url, tmp_path)
    for failure_id in ids:
        outputs = two_operators_at_once(env, "retry", str(failure_id), "--json")
        import json

        decisions = sorted(json.loads(o.stdout)["results"][0]["decision"] for o in outputs)
        assert decisions == ["retried", "skipped_already_retried"], [o.stderr for o in outputs]
        assert sorted(o.returncode for o in outputs) == [0, 3]
        assert not any("Traceback" in o.stderr for o in outputs)
    once_each(db_url, ids)


def _jobs_failed_twice(db_url: str, count: int) -> None:
    """``count`` failed jobs, each with two failures (its own second attempt failed
    too): the older one of each job is superseded by the newer."""
    import psycopg
    from _retry_support import INSERT_FAILURE, failure_params

    first = bulk_failed_jobs(db_url, count)
    jobs = [r["job_id"] for r in sql(db_url, "SELECT job_id FROM jobsys_failures ORDER BY id")]
    with psycopg.connect(db_url, autocommit=True) as conn, conn.cursor() as cur:
        cur.executemany(
            INSERT_FAILURE, [failure_params(job, attempt=2, kind="runtime") for job in jobs]
        )
    assert len(first) == count


def test_bulk_retry_exit_code_depends_on_the_work_not_the_race(  # type: ignore[no-untyped-def]
    cli, db_url: str, tmp_path: Path
) -> None:
    """Jobs whose newer failure was retried (by this run or a racing one) are done:
    their superseded older failures do not make a bulk retry "partly done" (exit 3)."""
    _jobs_failed_twice(db_url, 20)
    first = cli("--database-url", db_url, "retry", "--all", "--everything", "--yes", "--json")
    assert first.json()["counts"] == {"retried": 20, "skipped_superseded": 20}
    assert first.exit_code == 0, first.stderr
    # Each older failure says this run retried its newer one ("retry it instead" before)
    superseded = [r for r in first.json()["results"] if r["decision"] == "skipped_superseded"]
    assert {r["detail"].partition("), ")[2] for r in superseded} == {
        "retried by this run: nothing left to retry"
    }
    # What the racing colleague sees a moment later (the retried jobs have not run).
    second = cli("--database-url", db_url, "retry", "--all", "--everything", "--yes", "--json")
    assert second.json()["counts"] == {"skipped_already_retried": 20, "skipped_superseded": 20}
    assert second.exit_code == 0, second.stderr


def test_two_bulk_retries_at_once_both_exit_0(db_url: str, tmp_path: Path) -> None:
    _jobs_failed_twice(db_url, 50)
    outputs = two_operators_at_once(
        jobsys_env(db_url, tmp_path), "retry", "--all", "--everything", "--yes", "--json"
    )
    import json

    counts = [json.loads(o.stdout)["counts"] for o in outputs]
    report(
        "concurrent-bulk-retries",
        exits="/".join(str(o.returncode) for o in outputs),
        retried=sum(c.get("retried", 0) for c in counts),
        jobs=50,
        skipped_already_retried=sum(c.get("skipped_already_retried", 0) for c in counts),
    )
    assert [o.returncode for o in outputs] == [0, 0], [o.stderr for o in outputs]
    assert sum(c.get("retried", 0) for c in counts) == 50
    once_each(
        db_url,
        [r["id"] for r in sql(db_url, "SELECT max(id) AS id FROM jobsys_failures GROUP BY job_id")],
    )
