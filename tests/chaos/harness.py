"""What every chaos scenario uses: a jobsys worker process (its exit time watched to
the tenth of a second), a lane config, the effect ledger and its checks, and a
throwaway PostgreSQL server that a scenario may stop and start."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
from chaos_tasks import LEDGER_DDL
from rt_support import query, wait_until

HERE = Path(__file__).resolve().parent

QUEUES_YAML = """
base:
  concurrency: {concurrency}
  queues: [default, maintenance]
worker:
  poll_interval_seconds: 1
  shutdown_grace_seconds: 5
  heartbeat_interval_seconds: {heartbeat}
  dead_after_seconds: {dead_after}
  reap_interval_seconds: {reap}
"""


def write_config(
    tmp: Path,
    *,
    heartbeat: float = 2.0,
    dead_after: float = 30.0,
    reap: float = 5.0,
    concurrency: int = 4,
) -> Path:
    """A lane ``base`` over ``default``; the defaults are jobsys's own."""
    config = tmp / "config"
    config.mkdir(exist_ok=True)
    (config / "queues.yaml").write_text(
        QUEUES_YAML.format(
            concurrency=concurrency, heartbeat=heartbeat, dead_after=dead_after, reap=reap
        )
    )
    (config / "schedule.yaml").write_text("allow_empty: true\nentries: {}\n")
    return config


class Worker:
    """``jobsys worker`` in a subprocess; ``exited_at`` is its wall-clock exit time.
    ``clock_offset_s`` shifts this process's host clock (``JOBSYS_CLOCK_OFFSET_SECONDS``,
    read through ``jobsys.clock``) to play a host whose clock is off."""

    def __init__(
        self,
        name: str,
        tmp: Path,
        url: str,
        ledger_url: str,
        config: Path,
        *,
        clock_offset_s: float = 0.0,
    ) -> None:
        self.name = name
        env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
        env.update(
            JOBSYS_DATABASE_URL=url,
            JOBSYS_CONFIG_DIR=str(config),
            JOBSYS_APP="chaos_tasks",
            JOBSYS_HOME=str(tmp / "home"),
            PYTHONPATH=os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")]),
            CHAOS_LEDGER_URL=ledger_url,
            JOBSYS_CLOCK_OFFSET_SECONDS=str(clock_offset_s),
        )
        self.log_path = tmp / f"worker-{name}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobsys", "worker", "--log-format", "json"],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        self.exited_at: float | None = None
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        self.proc.wait()
        self.exited_at = time.time()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_ready(self, timeout: float = 30.0) -> None:
        try:
            wait_until(lambda: "worker_ready" in self.output(), timeout, f"{self.name} ready")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.output()}") from None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> int | None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self._log.close()
        return self.proc.returncode


@contextmanager
def busy_worker_and_a_peer(
    tmp: Path,
    a_url: str,
    db_url: str,
    config: Path,
    *,
    seconds: float,
    clock_offsets_s: tuple[float, float] = (0.0, 0.0),
) -> Iterator[tuple[Worker, Worker, list[int]]]:
    """Worker A (on ``a_url``: direct, or a proxy) running 4 jobs of ``seconds``, then
    worker B (direct), whose reaper may recover A's jobs; both stopped at the end.
    ``clock_offsets_s`` = (A's, B's) host-clock offsets."""
    create_ledger(db_url)
    a = Worker("a", tmp, a_url, db_url, config, clock_offset_s=clock_offsets_s[0])
    b: Worker | None = None
    try:
        a.wait_ready()
        jobs = defer(db_url, 4, seconds=seconds)
        wait_until(lambda: len(ledger(db_url)) == 4, 30, "A running the 4 jobs")
        b = Worker("b", tmp, db_url, db_url, config, clock_offset_s=clock_offsets_s[1])
        b.wait_ready()
        yield a, b, jobs
    except BaseException:
        print(a.output()[-3000:], query(db_url, "SELECT id, status::text FROM procrastinate_jobs"))
        raise
    finally:
        a.stop()
        if b is not None:
            b.stop()


@dataclass(frozen=True)
class Run:
    job_id: int
    pid: int
    started_at: float
    ended_at: float | None


def ledger(url: str) -> list[Run]:
    return [
        Run(*row)
        for row in query(
            url, "SELECT job_id, pid, started_at, ended_at FROM chaos_ledger ORDER BY id"
        )
    ]


def create_ledger(url: str) -> None:
    query(url, LEDGER_DDL)


def overlaps(runs: list[Run], exits: dict[int, float | None]) -> list[tuple[Run, Run]]:
    """Pairs of runs of one job, by different processes, that overlap in time. A run
    with no end was cut off with its process: it ended when the process exited (still
    running: now)."""

    def end(run: Run) -> float:
        if run.ended_at is not None:
            return run.ended_at
        return exits.get(run.pid) or time.time()

    found = []
    for i, a in enumerate(runs):
        for b in runs[i + 1 :]:
            same_job = a.job_id == b.job_id and a.pid != b.pid
            if same_job and a.started_at < end(b) and b.started_at < end(a):
                found.append((a, b))
    return found


def defer(url: str, count: int, seconds: float) -> list[int]:
    ids = []
    with psycopg.connect(url, autocommit=True) as conn:
        for _ in range(count):
            cur = conn.execute(
                "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('default', 'chaos.effect', 0, "
                "NULL, NULL, %s::jsonb, NULL)::procrastinate_job_to_defer_v1])",
                (f'{{"seconds": {seconds}}}',),
            )
            row = cur.fetchone()
            assert row is not None
            ids.extend(int(i) for i in row[0])
    return ids


def requeue_times(url: str) -> list[float]:
    """When a reaper requeued a job of a dead worker (its worker_lost failure rows)."""
    return [
        float(r[0])
        for r in query(
            url,
            "SELECT extract(epoch FROM occurred_at)::float8 FROM jobsys_failures "
            "WHERE reason = 'worker_lost' ORDER BY occurred_at",
        )
    ]


@contextmanager
def throwaway_server() -> Iterator[tuple[Path, str]]:
    """A PostgreSQL server of its own (the embedded one, in a temporary home),
    migrated; yields (home, url). Stop/start it with ``jobsys.db.embedded``."""
    from jobsys.db import embedded, migrate

    home = Path(tempfile.mkdtemp(prefix="jobsys-chaos-"))
    try:
        st = embedded.start(home)
        assert st.url is not None
        migrate.upgrade(st.url)
        yield home, st.url
    finally:
        embedded.stop(home)
        shutil.rmtree(home, ignore_errors=True)
