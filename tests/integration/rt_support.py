"""Helpers for the runtime tests: a small lane topology, test tasks, worker processes."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
from waiting import wait_until as wait_until

QUEUES_YAML = """
base:
  concurrency: 2
  queues: [q_base, maintenance]  # maintenance: jobsys's own tasks
capsules:
  fast:
    concurrency: 3
    queues: [q_fast]
  timeouts:
    concurrency: 2
    timeout_seconds: 1
    queues: [q_timeout]
worker:
  poll_interval_seconds: {poll}
  shutdown_grace_seconds: {grace}
  heartbeat_interval_seconds: {heartbeat}
  dead_after_seconds: {dead_after}
"""

TASKS_PY = """
import asyncio, os, time
from jobsys import task

def _log(event, tag):
    with open(os.environ["RT_LOG"], "a") as f:
        f.write(f"{event} {tag} {time.time():.6f}\\n")

@task(queue="q_base", name="rt.sleep")
async def sleep(tag: str, seconds: float = 0.0) -> None:
    _log("start", tag)
    await asyncio.sleep(seconds)
    _log("end", tag)

@task(queue="q_base", name="rt.safe", rerun_safe=True)
async def safe(tag: str) -> None:
    _log("start", tag)
    _log("end", tag)

@task(queue="q_base", name="rt.safe_sleep", rerun_safe=True)
async def safe_sleep(tag: str, seconds: float = 0.0) -> None:
    _log("start", tag)
    await asyncio.sleep(seconds)
    _log("end", tag)

@task(queue="q_fast", name="rt.sleep_fast")
async def sleep_fast(tag: str, seconds: float = 0.0) -> None:
    _log("start", tag)
    await asyncio.sleep(seconds)
    _log("end", tag)

@task(queue="q_timeout", name="rt.async_hang")
async def async_hang(tag: str) -> None:
    _log("start", tag)
    await asyncio.sleep(60)
    _log("end", tag)

@task(queue="q_timeout", name="rt.sync_hang")
def sync_hang(tag: str) -> None:
    _log("start", tag)
    time.sleep(60)
    _log("end", tag)
"""


def write_app(
    tmp: Path,
    *,
    poll: float = 30.0,
    grace: float = 10.0,
    heartbeat: float = 0.5,
    dead_after: float = 2.0,
) -> Path:
    config = tmp / "config"
    config.mkdir(exist_ok=True)
    (config / "queues.yaml").write_text(
        QUEUES_YAML.format(poll=poll, grace=grace, heartbeat=heartbeat, dead_after=dead_after)
    )
    (config / "schedule.yaml").write_text("allow_empty: true\nentries: {}\n")
    (tmp / "rt_tasks.py").write_text(TASKS_PY)
    return config


def environment(tmp: Path, db_url: str, config: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(
        JOBSYS_DATABASE_URL=db_url,
        JOBSYS_CONFIG_DIR=str(config),
        JOBSYS_APP="rt_tasks",
        JOBSYS_HOME=str(tmp / "home"),
        PYTHONPATH=str(tmp),
        RT_LOG=str(tmp / "events.log"),
    )
    return env


class WorkerProcess:
    def __init__(self, env: dict[str, str], tmp: Path, *args: str) -> None:
        self.log_path = tmp / f"worker-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobsys", "worker", *args],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def output(self) -> str:
        return self.log_path.read_text()

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        wait_until(lambda: text in self.output(), timeout, f"{text!r} in worker output")

    def signal(self, sig: int = signal.SIGTERM) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()


def events(tmp: Path) -> list[tuple[str, str, float]]:
    path = tmp / "events.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        event, tag, at = line.split()
        out.append((event, tag, float(at)))
    return out


def max_overlap(evts: list[tuple[str, str, float]], prefix: str) -> int:
    timeline = sorted(
        (at, 1 if event == "start" else -1) for event, tag, at in evts if tag.startswith(prefix)
    )
    current = peak = 0
    for _, delta in timeline:
        current += delta
        peak = max(peak, current)
    return peak


def query(db_url: str, sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    with psycopg.connect(db_url, autocommit=True) as conn:
        cur = conn.execute(sql, params)
        return cur.fetchall() if cur.description else []


def defer_rows(db_url: str, task: str, queue: str, args_list: list[dict[str, Any]]) -> None:
    """Insert jobs the way any client would (Procrastinate's SQL function)."""
    import json

    with psycopg.connect(db_url, autocommit=True) as conn:
        for args in args_list:
            conn.execute(
                "SELECT procrastinate_defer_jobs_v1(ARRAY[ROW(%s, %s, 0, NULL, NULL, %s::jsonb, "
                "NULL)::procrastinate_job_to_defer_v1])",
                (queue, task, json.dumps(args)),
            )


def report(scenario: str, **figures: Any) -> None:
    """One line of measured figures of a fault scenario (``make chaos`` prints them)."""
    text = "  ".join(
        f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items()
    )
    print(f"\nCHAOS {scenario}: {text}", flush=True)


def config_with(tmp_path: Path, throttle: str) -> Path:
    """A copy of the shipped config/ with ``throttle`` (indented entries) set."""
    target = tmp_path / "config"
    shutil.copytree(Path(__file__).resolve().parents[2] / "config", target)
    path = target / "queues.yaml"
    path.write_text(path.read_text().replace("\nthrottle: {}\n", "\nthrottle:\n" + throttle))
    return target
