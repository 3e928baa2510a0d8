"""Workers behind a real PgBouncer (Debian's ``pgbouncer``, started from
``examples/pgbouncer.ini``): transaction mode runs every job exactly once by polling
and says at ERROR that LISTEN/NOTIFY is broken; session mode keeps NOTIFY working;
``worker.listen: required`` refuses a transaction pool with exit 2."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pgbouncer_support import pgbouncer
from rt_support import WorkerProcess, defer_rows, environment, events, query, wait_until, write_app

pytestmark = pytest.mark.slow

JOBS = 100


def listen_broken_lines(output: str) -> list[dict[str, object]]:
    lines = []
    for line in output.splitlines():
        if line.startswith("{"):
            record = json.loads(line)
            if record.get("action") == "listen_notify_broken":
                lines.append(record)
    return lines


def ready(worker: WorkerProcess, timeout: float = 30) -> None:
    wait_until(
        lambda: '"worker_ready"' in worker.output() or worker.proc.poll() is not None,
        timeout,
        "the worker's start",
    )
    assert '"worker_ready"' in worker.output(), worker.output()


@contextlib.contextmanager
def listen_required(db_url: str, tmp: Path, mode: str, *, poll: float) -> Iterator[dict[str, str]]:
    """A worker environment through PgBouncer in ``mode``, with worker.listen: required."""
    config = write_app(tmp, poll=poll)
    queues = config / "queues.yaml"
    queues.write_text(queues.read_text() + "  listen: required\n")
    with pgbouncer(db_url, tmp, pool_mode=mode) as bouncer_url:
        yield environment(tmp, bouncer_url, config)


@pytest.mark.parametrize(
    "throttle", [None, "q_base: {per_key: tag, rate: 1000/s, concurrency: 50}"]
)
def test_transaction_mode_runs_every_job_once_by_polling(
    db_url: str, tmp_path: Path, throttle: str | None
) -> None:
    """With a throttle on q_base its lane claims through the limited claim (one call of
    ``jobsys_claim_limited_v1``, its plan kept by whichever server session runs it)."""
    config = write_app(tmp_path, poll=0.5)
    if throttle is not None:
        queues = config / "queues.yaml"
        queues.write_text(queues.read_text() + f"throttle:\n  {throttle}\n")
    with pgbouncer(db_url, tmp_path, pool_mode="transaction") as bouncer_url:
        env = environment(tmp_path, bouncer_url, config)
        args = ("--lane", "base", "--lane", "fast", "--log-format", "json")
        workers = [WorkerProcess(env, tmp_path, *args) for _ in range(2)]
        try:
            for worker in workers:
                ready(worker)
            # Deferred while the workers run: they must find them without NOTIFY.
            half = JOBS // 2
            defer_rows(db_url, "rt.safe", "q_base", [{"tag": f"b{i}"} for i in range(half)])
            defer_rows(
                db_url, "rt.sleep_fast", "q_fast", [{"tag": f"f{i}"} for i in range(JOBS - half)]
            )
            done = "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            wait_until(lambda: query(db_url, done)[0][0] == JOBS, 90, f"{JOBS} jobs done")
            for worker in workers:
                assert worker.proc.poll() is None, worker.output()  # no exit, no crash loop
                broken = listen_broken_lines(worker.output())
                assert len(broken) == 1, worker.output()
                assert broken[0]["level"] == "error"
                assert "DuplicatePreparedStatement" not in worker.output()
            starts = Counter(tag for event, tag, _ in events(tmp_path) if event == "start")
            assert len(starts) == JOBS and set(starts.values()) == {1}
            statuses = dict(
                query(db_url, "SELECT status::text, count(*) FROM procrastinate_jobs GROUP BY 1")
            )
            assert statuses == {"succeeded": JOBS}
            if throttle is not None:
                # The limited claim recorded q_base's starts, each in its job's bucket
                # (the worker prunes the ledger only every 200 claims).
                ledger = query(
                    db_url,
                    "SELECT s.bucket = 'queue:q_base:' || (j.args ->> 'tag') "
                    "FROM jobsys_flow_starts AS s JOIN procrastinate_jobs AS j "
                    "ON j.id = s.job_id",
                )
                assert ledger and all(ok for (ok,) in ledger), ledger
            # The CLI through the same pooler.
            listed = subprocess.run(
                [sys.executable, "-m", "jobsys", "jobs", "list", "--json", "--limit", "5"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert listed.returncode == 0, listed.stderr
            for worker in workers:
                worker.signal()
            for worker in workers:
                assert worker.wait(30) == 0, worker.output()
        finally:
            for worker in workers:
                worker.kill()


def test_session_mode_keeps_notify_working(db_url: str, tmp_path: Path) -> None:
    # Polling every 30 s: a pickup within 2 s of the insert came from NOTIFY.
    with listen_required(db_url, tmp_path, "session", poll=30) as env:
        worker = WorkerProcess(env, tmp_path, "--lane", "base", "--log-format", "json")
        try:
            ready(worker)
            assert listen_broken_lines(worker.output()) == []
            deferred_at = time.time()
            defer_rows(db_url, "rt.sleep", "q_base", [{"tag": "notified"}])
            started = wait_until(
                lambda: [e for e in events(tmp_path) if e[:2] == ("start", "notified")],
                10,
                "pickup",
            )
            assert started[0][2] - deferred_at < 2.0
            worker.signal()
            assert worker.wait(30) == 0, worker.output()
        finally:
            worker.kill()


def test_listen_required_refuses_a_transaction_pool(db_url: str, tmp_path: Path) -> None:
    with listen_required(db_url, tmp_path, "transaction", poll=0.5) as env:
        defer_rows(db_url, "rt.sleep", "q_base", [{"tag": "never"}])
        worker = WorkerProcess(env, tmp_path, "--lane", "base")
        try:
            assert worker.wait(60) == 2, worker.output()
        finally:
            worker.kill()
        out = worker.output()
        assert "worker.listen: 'required'" in out
        assert "pool_mode = transaction" in out
        assert "Traceback" not in out
        assert events(tmp_path) == []  # refused before running anything
        assert query(db_url, "SELECT status::text FROM procrastinate_jobs") == [("todo",)]
