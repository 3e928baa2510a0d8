"""Worker runtime benchmark: jobsys worker vs plain Procrastinate, pickup latency, RSS.

- throughput of no-op jobs at concurrency 1, 10 and 50: a full ``jobsys worker
  --drain`` (every middleware of ``jobsys.app.worker_middlewares`` on) and plain
  Procrastinate 3.10 at its defaults, same database, same run; measured from the
  database's own job events (first start to last success);
- pickup latency (defer commit to job start) with an idle jobsys worker, p50/p99;
- the worker's RSS idle and after 20,000 jobs.

Creates and drops its own database on the server of JOBSYS_BENCH_DATABASE_URL /
JOBSYS_TEST_DATABASE_URL (default postgresql://postgres@127.0.0.1:5432/postgres).
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

THROUGHPUT_JOBS = 3000
CONCURRENCIES = (1, 10, 50)
LATENCY_SAMPLES = 200
RSS_JOBS = 20_000
QUEUES_YAML = """
base:
  concurrency: 1
  queues: [bench, maintenance]  # maintenance: jobsys's own tasks
worker:
  poll_interval_seconds: 5
  shutdown_grace_seconds: 5
"""
REPO = Path(__file__).resolve().parents[1]


def _server_url() -> str:
    return (
        os.environ.get("JOBSYS_BENCH_DATABASE_URL")
        or os.environ.get("JOBSYS_TEST_DATABASE_URL")
        or "postgresql://postgres@127.0.0.1:5432/postgres"
    )


def _defer_noops(url: str, count: int, task: str = "bench.noop") -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW('bench', %s, 0, NULL, NULL, "
            "'{}'::jsonb, NULL)::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s)",
            (task, count),
        )


def _reset(url: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE procrastinate_jobs, procrastinate_workers CASCADE")


#: Jobs done and the span from the first start to the last success, on the database clock.
EVENTS_SPAN = (
    "SELECT count(*) FILTER (WHERE type = 'succeeded'), "
    "extract(epoch FROM max(at) FILTER (WHERE type = 'succeeded') "
    "- min(at) FILTER (WHERE type = 'started')) FROM procrastinate_events"
)


def _rate(url: str, span_query: str = EVENTS_SPAN) -> float:
    """Jobs per second from ``span_query``'s (jobs done, seconds) row."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(span_query).fetchone()
    assert row is not None
    done, seconds = int(row[0]), float(row[1] or 0)
    return done / seconds if seconds > 0 else 0.0


def _env(url: str, config: Path, marks: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(
        JOBSYS_DATABASE_URL=url,
        JOBSYS_CONFIG_DIR=str(config),
        JOBSYS_APP="bench.runtime_tasks",
        PYTHONPATH=str(REPO),
        BENCH_MARKS=str(marks),
    )
    return env


def _jobsys_throughput(url: str, env: dict[str, str], concurrency: int) -> float:
    _reset(url)
    _defer_noops(url, THROUGHPUT_JOBS)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "jobsys",
            "worker",
            "--drain",
            "--concurrency-scale",
            str(concurrency),
        ],
        env=env,
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return _rate(url)


def _plain_throughput(url: str, concurrency: int) -> float:
    _reset(url)
    _defer_noops(url, THROUGHPUT_JOBS)
    subprocess.run(
        [sys.executable, "-m", "bench.plain_worker", url, str(concurrency)],
        cwd=REPO,
        check=True,
        stderr=subprocess.DEVNULL,
    )
    return _rate(url)


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _wait(check: Any, timeout: float, poll: float = 0.001) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("benchmark condition not reached")
        time.sleep(poll)


def _latency_and_rss(url: str, env: dict[str, str], marks: Path) -> dict[str, float]:
    _reset(url)
    log_path = marks.with_suffix(".log")
    log = log_path.open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jobsys", "worker", "--concurrency-scale", "10"],
        env=env,
        stderr=log,
    )
    try:
        _wait(lambda: "worker_ready" in log_path.read_text(), 30, poll=0.05)
        time.sleep(1.0)
        idle_rss = _rss_mib(proc.pid)
        samples = []
        with psycopg.connect(url, autocommit=True) as conn:
            for seq in range(LATENCY_SAMPLES):
                conn.execute(
                    "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW('bench', 'bench.mark', 0, "
                    "NULL, NULL, jsonb_build_object('seq', %s::int), NULL)"
                    "::procrastinate_job_to_defer_v1])",
                    (seq,),
                )
                committed = time.time()
                _wait(
                    lambda seq=seq: marks.exists() and len(marks.read_text().splitlines()) > seq, 10
                )
                started = float(marks.read_text().splitlines()[seq].split()[1])
                samples.append((started - committed) * 1000)
                time.sleep(0.005)
        _defer_noops(url, RSS_JOBS)

        def finished() -> bool:
            with psycopg.connect(url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
                ).fetchone()
            return row is not None and row[0] >= RSS_JOBS + LATENCY_SAMPLES

        _wait(finished, 300, poll=0.5)
        busy_rss = _rss_mib(proc.pid)
    finally:
        proc.terminate()
        proc.wait(30)
        log.close()
    samples.sort()
    return {
        "pickup_latency_p50_ms": round(statistics.median(samples), 2),
        "pickup_latency_p99_ms": round(samples[int(len(samples) * 0.99) - 1], 2),
        "rss_idle_mib": round(idle_rss, 1),
        "rss_after_20000_jobs_mib": round(busy_rss, 1),
    }


def run() -> dict[str, Any]:
    from jobsys.db import migrate
    from jobsys.db.url import with_database

    server = _server_url()
    name = f"jobsys_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = with_database(server, name)
    try:
        migrate.upgrade(url)
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "config"
            config.mkdir()
            (config / "queues.yaml").write_text(QUEUES_YAML)
            (config / "schedule.yaml").write_text("allow_empty: true\nentries: {}\n")
            marks = Path(tmp) / "marks.txt"
            env = _env(url, config, marks)
            results: dict[str, Any] = {"jobs_per_run": THROUGHPUT_JOBS}
            for c in CONCURRENCIES:
                results[f"jobsys_jobs_per_s_c{c}"] = round(_jobsys_throughput(url, env, c), 1)
                results[f"procrastinate_jobs_per_s_c{c}"] = round(_plain_throughput(url, c), 1)
                print(
                    f"runtime bench c={c}: jobsys {results[f'jobsys_jobs_per_s_c{c}']}/s, "
                    f"procrastinate {results[f'procrastinate_jobs_per_s_c{c}']}/s",
                    file=sys.stderr,
                )
            results["ratio_c10"] = round(
                results["jobsys_jobs_per_s_c10"]
                / max(results["procrastinate_jobs_per_s_c10"], 1e-9),
                2,
            )
            results.update(_latency_and_rss(url, env, marks))
        return results
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<32} {value}")
