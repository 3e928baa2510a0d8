"""Every read command as an operator runs it, at 1,000,000 jobs and 1,000,000 failures.

Each command is timed as a whole process (interpreter start-up, imports, configuration,
connection, queries, rendering) with its ``--json`` output, the median of ``RUNS``
runs; beside them ``jobsys --help`` (start-up alone), so a figure can be read as a
ratio on a noisy machine. The target (issue #13): every read under
``TARGET_SECONDS`` wall on 2 cores.

The rows are seeded once into the database ``jobsys_bench_reads`` on the bench server
and kept for the next run (``--reseed``, or a schema change, seeds afresh): the
1,000,000 failures and 10,000 issues of :mod:`bench.failures`, the 1,000,000 jobs with
their events of :mod:`bench.jobmgmt`, plus a pipeline, a fan-out run and a worker
process for the ``show`` commands.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg

from bench import failures as failures_bench
from bench import jobmgmt
from jobsys.db import url as db_url

DATABASE = "jobsys_bench_reads"
RUNS = 3
TARGET_SECONDS = 0.5
RESULTS = Path(__file__).resolve().parent / "results"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"

#: name -> arguments; ``{job}`` and friends are filled in from the seeded rows.
COMMANDS: dict[str, list[str]] = {
    "queues": ["queues"],
    "jobs list": ["jobs", "list"],
    "jobs list --status failed": ["jobs", "list", "--status", "failed"],
    "jobs show": ["jobs", "show", "{job}"],
    "failures list": ["failures", "list"],
    "failures list --kind transient": ["failures", "list", "--kind", "transient"],
    "failures list --group-by fingerprint": ["failures", "list", "--group-by", "fingerprint"],
    "failures show": ["failures", "show", "{failure}"],
    "issues list": ["issues", "list"],
    "issues list --all": ["issues", "list", "--all"],
    "issues show": ["issues", "show", "{issue}"],
    "pipelines list": ["pipelines", "list"],
    "pipelines show": ["pipelines", "show", "{pipeline}"],
    "schedule list": ["schedule", "list"],
    "fanout list": ["fanout", "list"],
    "fanout show": ["fanout", "show", "{run}"],
    "workers list": ["workers", "list"],
    "workers show": ["workers", "show", "{worker}"],
    "dashboard --once": ["dashboard", "--once"],
    "db status": ["db", "status"],
    "db current": ["db", "current"],
}


def database() -> tuple[str, str]:
    admin = failures_bench.server_url()
    return admin, db_url.with_database(admin, DATABASE)


def _seeded(url: str) -> dict[str, Any] | None:
    """The ids of a complete earlier seed at the current schema, or None."""
    from jobsys.db import migrate

    try:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT ids FROM bench_reads_seed").fetchone()
        if row is None or sorted(migrate.current(url)) != sorted(migrate.heads()):
            return None
        return dict(row[0])
    except psycopg.Error:
        return None


def seed(admin: str, url: str, *, reseed: bool) -> dict[str, Any]:
    from jobsys.config import load
    from jobsys.db import migrate

    found = None if reseed else _seeded(url)
    if found is not None:
        return {**found, "seed_seconds": 0.0, "reused": True}
    started = time.perf_counter()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{DATABASE}"')
    migrate.upgrade(url)
    failures_bench.seed(url, load(CONFIG_DIR))
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(jobmgmt.SEED_JOBS, {"accounts": jobmgmt.ACCOUNTS, "jobs": jobmgmt.JOBS})
        conn.execute(jobmgmt.SEED_EVENTS)
        ids = {
            "job": conn.execute("SELECT max(id) FROM procrastinate_jobs").fetchone()[0],  # type: ignore[index]
            "failure": conn.execute("SELECT max(id) FROM jobsys_failures").fetchone()[0],  # type: ignore[index]
            "issue": conn.execute(
                "SELECT id FROM jobsys_issues WHERE status = 'open' ORDER BY id LIMIT 1"
            ).fetchone()[0],  # type: ignore[index]
            "pipeline": conn.execute(
                "INSERT INTO jobsys_pipelines (name, entity) VALUES ('bench', 'e:1') RETURNING id"
            ).fetchone()[0],  # type: ignore[index]
            "run": conn.execute(
                "INSERT INTO jobsys_fanout_runs (entry, source, task, queue, batch_size, spec) "
                "VALUES ('bench', 'bench_accounts.id', 'demo.process_account', 'sync', 10, "
                """'{"table": "bench_accounts", "id_column": "id", "item_arg": "account_id"}') """
                "RETURNING id"
            ).fetchone()[0],  # type: ignore[index]
            "worker": "benchhost:4242",
        }
        conn.execute(
            "CREATE TABLE bench_accounts AS SELECT g AS id FROM generate_series(1, %(n)s) g",
            {"n": jobmgmt.ACCOUNTS},
        )
        conn.execute("ALTER TABLE bench_accounts ADD PRIMARY KEY (id)")
        conn.execute(
            "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes, concurrency, "
            "status, started_at, last_heartbeat) VALUES ('benchhost:4242:x', 'benchhost', 4242, "
            """ARRAY['base'], '{"base": 2}', 'running', now(), now())"""
        )
        for table in ("procrastinate_jobs", "procrastinate_events", "jobsys_failures"):
            conn.execute(f"VACUUM ANALYZE {table}")
        conn.execute("CREATE TABLE bench_reads_seed (ids jsonb NOT NULL)")
        conn.execute("INSERT INTO bench_reads_seed VALUES (%s)", (json.dumps(ids),))
    return {**ids, "seed_seconds": round(time.perf_counter() - started, 1), "reused": False}


def wall(argv: list[str], env: dict[str, str]) -> float:
    """Median wall seconds of ``RUNS`` runs of the whole process (one warm-up first)."""
    samples = []
    for n in range(RUNS + 1):
        started = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, env=env, check=False)
        if n:
            samples.append(time.perf_counter() - started)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stderr.decode()[-300:]}")
    return round(statistics.median(samples), 3)


def command_times(url: str, ids: dict[str, Any]) -> dict[str, float]:
    jobsys = str(Path(sys.executable).with_name("jobsys"))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(JOBSYS_CONFIG_DIR=str(CONFIG_DIR), JOBSYS_DATABASE_URL=url)
    # as an installation runs: its modules' bytecode cached (the warm-up writes it); a
    # shell with PYTHONDONTWRITEBYTECODE compiles every jobsys module on every run
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    out = {"jobsys --help (start-up alone)": wall([jobsys, "--help"], env)}
    for name, args in COMMANDS.items():
        argv = [jobsys, *(a.format(**ids) for a in args), "--json"]
        if name.startswith("db "):
            argv = argv[:-1]  # as an operator reads them
        out[name] = wall(argv, env)
    return out


def run(reseed: bool = False) -> dict[str, Any]:
    admin, url = database()
    seeded = seed(admin, url, reseed=reseed)
    times = command_times(url, seeded)
    over = {k: v for k, v in times.items() if v > TARGET_SECONDS}
    detail = {
        "rows": {"jobs": jobmgmt.JOBS, "failures": failures_bench.FAILURES},
        "seed": {"seconds": seeded["seed_seconds"], "reused": seeded["reused"]},
        "runs": RUNS,
        "wall_s": times,
        "over_target": over,
        "cores": os.cpu_count(),
        "load_average": os.getloadavg(),
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "reads.json").write_text(json.dumps(detail, indent=2))
    print(f"read commands, whole process, median of {RUNS} (target < {TARGET_SECONDS} s)")
    for name, seconds in times.items():
        mark = "  OVER" if seconds > TARGET_SECONDS else ""
        print(f"  {name:<40} {seconds:6.3f} s{mark}")
    return {
        "worst_read_wall_s": max(v for k, v in times.items() if not k.startswith("jobsys --")),
        "startup_wall_s": times["jobsys --help (start-up alone)"],
        "reads_over_target": len(over),
    }


if __name__ == "__main__":
    print(json.dumps(run(reseed="--reseed" in sys.argv), indent=2))
