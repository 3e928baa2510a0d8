"""Failures and issues at scale: 1,000,000 failure rows and 10,000 issues in a throwaway
database. Database time of ``failures list`` (default and each single filter) and
``issues list`` from EXPLAIN ANALYZE, wall time of the whole command, and the time
failure capture adds to a failing job.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from jobsys import task
from jobsys.db import url as db_url

FAILURES = 1_000_000
ISSUES = 10_000
ACCOUNTS = 200_000
PROFILES = 500_000
CAPTURE_JOBS = 300
CAPTURE_ROUNDS = 5
DEFAULT_SERVER = "postgresql://postgres@127.0.0.1:5432/postgres"
CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@task(queue="profiles", name="bench.fail")
def bench_fail(account_id: int) -> None:
    raise KeyError("edge_followed_by")


SEED_ISSUES = """
INSERT INTO jobsys_issues (fingerprint, kind, title, status, muted_until, occurrences,
                           affected_accounts, first_seen, last_seen, task, error_class, queue)
SELECT 'job_failure:bench' || g,
       CASE WHEN g %% 50 = 0 THEN 'queue_health' WHEN g %% 97 = 0 THEN 'service_outage'
            ELSE 'job_failure' END,
       'KeyError in app.task_' || (g %% 20) || ': key ' || g,
       CASE WHEN g %% 10 < 2 THEN 'open' WHEN g %% 10 = 2 THEN 'muted' ELSE 'resolved' END,
       CASE WHEN g %% 10 = 2 THEN now() + interval '1 hour' END,
       100, 10, now() - interval '30 days', now() - g * interval '1 minute',
       'app.task_' || (g %% 20), 'builtins.KeyError', 'profiles'
  FROM generate_series(1, %(issues)s) g
"""

SEED_FAILURES = """
INSERT INTO jobsys_failures (job_id, task, queue, lane, attempt, args, error_class, message,
    account_id, profile_id, kind, reason, retryable, will_retry, worker, fingerprint, issue_id,
    occurred_at)
SELECT g, 'app.task_' || (g %% 20), (%(queues)s::text[])[1 + g %% %(nq)s],
       (%(lanes)s::text[])[1 + g %% %(nq)s], 1,
       jsonb_build_object('account_id', g %% %(accounts)s), 'builtins.KeyError', 'key ' || g,
       (g %% %(accounts)s)::text, (g %% %(profiles)s)::text,
       (ARRAY['runtime', 'transient', 'transient', 'authentication'])[1 + g %% 4],
       'exception', g %% 4 <> 3, false, 'w1', 'job_failure:bench' || (1 + g %% %(issues)s),
       1 + g %% %(issues)s, now() - g * interval '2.5 seconds'
  FROM generate_series(1, %(failures)s) g
"""


def server_url() -> str:
    return (
        os.environ.get("JOBSYS_BENCH_DATABASE_URL")
        or os.environ.get("JOBSYS_TEST_DATABASE_URL")
        or DEFAULT_SERVER
    )


def create_database() -> tuple[str, str]:
    from jobsys.db import migrate

    admin = server_url()
    name = f"jobsys_bench_failures_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = db_url.with_database(admin, name)
    migrate.upgrade(url)
    return admin, url


def drop_database(admin: str, url: str) -> None:
    name = url.rsplit("/", 1)[-1].split("?")[0]
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def seed(url: str, config: Any) -> dict[str, Any]:
    queues = list(config.all_queues)
    lanes = [config.lane_of(q) for q in queues]
    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SEED_ISSUES, {"issues": ISSUES})
        conn.execute(
            SEED_FAILURES,
            {
                "queues": queues, "lanes": lanes, "nq": len(queues), "accounts": ACCOUNTS,
                "profiles": PROFILES, "issues": ISSUES, "failures": FAILURES,
            },
        )  # fmt: skip
        conn.execute("ANALYZE jobsys_failures")
        conn.execute("ANALYZE jobsys_issues")
    return {"seconds": round(time.perf_counter() - started, 1), "queues": queues}


def cases(queues: list[str]) -> dict[str, list[str]]:
    """CLI arguments per case; values exist in the data (rare ones on purpose)."""
    return {
        "default": [],
        "kind": ["--kind", "authentication"],
        "task": ["--task", "app.task_7"],
        "queue": ["--queue", queues[-1]],
        "lane": ["--lane", "frame_generation"],
        "account": ["--account", "4242"],
        "profile": ["--profile", "4242"],
        "issue": ["--issue", "4242"],
        "since": ["--since", "1h"],
        "until": ["--until", "7d"],
        "retryable": ["--not-retryable"],
        # Two filters at once; a pair matching no row reads the most (0016's indexes).
        "kind+queue": ["--kind", "authentication", "--queue", "profiles"],
        "kind+task": ["--kind", "authentication", "--task", "app.task_2"],
        "kind+lane": ["--kind", "transient", "--lane", "frame_generation"],
        "queue+since": ["--queue", "profiles", "--since", "1h"],
    }


async def explain_times(url: str, argv: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    from jobsys.db.connect import connect
    from jobsys.engine.queries import FIND_HEALED
    from jobsys.failures import filters, store
    from jobsys.failures.service import COUNT_CAP
    from jobsys.issues import store as issues_store

    out: dict[str, dict[str, float]] = {}
    async with connect(url) as conn:
        for name, args in argv.items():
            pairs = dict(zip(args[::2], args[1::2], strict=False))
            chosen = filters.failure_filters(
                kind=pairs.get("--kind"), task=pairs.get("--task"), queue=pairs.get("--queue"),
                lane=pairs.get("--lane"), account=pairs.get("--account"),
                profile=pairs.get("--profile"),
                issue=int(pairs["--issue"]) if "--issue" in pairs else None,
                since=pairs.get("--since"), until=pairs.get("--until"),
                retryable=False if "--not-retryable" in args else None,
            )  # fmt: skip
            params = store.text_params({**chosen.params(), "limit": 50})
            sql = store.list_query(params)
            out[f"failures list {name}"] = await _explain(conn, sql, params)
            # the list envelope's total: counted up to the cap (jobsys.failures.service)
            count = store.COUNT_FAILURES.format(where=store.where_clause(params))
            out[f"failures total {name}"] = await _explain(
                conn, count, {**params, "cap": COUNT_CAP + 1}
            )
        sql = issues_store.LIST_ISSUES.format(
            status_clause=issues_store.STATUS_CLAUSES["open"],
            order=issues_store.ORDER_BY["impact"],
        )
        out["issues list"] = await _explain(conn, sql, {"kind": None, "limit": 50})
        out["issues healed pass"] = await _explain(conn, FIND_HEALED, {})
    return out


async def _explain(conn: Any, sql: str, params: dict[str, Any]) -> dict[str, float]:
    samples = []
    for _ in range(3):
        cur = await conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params)
        plan = (await cur.fetchone())["QUERY PLAN"][0]
        samples.append(plan["Planning Time"] + plan["Execution Time"])
    return {"db_ms": round(statistics.median(samples), 2)}


def command_times(url: str, argv: dict[str, list[str]]) -> dict[str, float]:
    jobsys = str(Path(sys.executable).with_name("jobsys"))
    env = {**os.environ, "JOBSYS_CONFIG_DIR": str(CONFIG_DIR)}
    out = {}
    commands = {f"failures list {k}": ["failures", "list", *v] for k, v in argv.items()}
    commands["issues list"] = ["issues", "list"]
    for name, args in commands.items():
        samples, cpu = [], []
        for _ in range(3):
            started = time.perf_counter()
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            proc = subprocess.run(
                [jobsys, "--database-url", url, *args, "--json"],
                capture_output=True, env=env, check=False,
            )  # fmt: skip
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            samples.append(time.perf_counter() - started)
            cpu.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
            if proc.returncode != 0:
                raise RuntimeError(f"{name}: {proc.stderr.decode()[-300:]}")
        out[name] = round(statistics.median(samples), 3)
        out[name + " (cpu)"] = round(statistics.median(cpu), 3)
    return out


async def capture_overhead(url: str, config: Any) -> dict[str, float]:
    """Wall time of CAPTURE_JOBS failing jobs with and without capture, per job.

    Rounds alternate (without, with) so drift on a shared machine hits both sides; the
    overhead is the median of the per-round differences. The clock stops when the queue
    is drained and, should a middleware ever leave work running after its job (one with
    a ``drain()``), when that work is done too: it is counted.
    """
    from jobsys.failures.capture import capture_middleware
    from jobsys.lanes.execution import build_engine_app

    await skip_seeded_job_ids(url)

    async def run(middlewares: list[Any]) -> float:
        app = build_engine_app(url, config=config, max_size=4)
        async with app.open_async():
            for i in range(CAPTURE_JOBS):
                await app.tasks["bench.fail"].defer_async(account_id=i % 50)
            started = time.perf_counter()
            await app.run_worker_async(
                queues=["profiles"], wait=False, install_signal_handlers=False,
                worker_middleware=middlewares, additional_context={"lane": "base"},
            )  # fmt: skip
            for middleware in middlewares:
                if hasattr(middleware, "drain"):
                    await middleware.drain()
            return time.perf_counter() - started

    home = Path(f"/tmp/jobsys-bench-{os.getpid()}")
    capture = capture_middleware(config, home)
    before = await count_failures(url)
    await run([capture])  # warm-up: first issue row, plans, pool
    without, with_capture = [], []
    for _ in range(CAPTURE_ROUNDS):
        without.append(await run([]))
        with_capture.append(await run([capture]))
    recorded = await count_failures(url) - before
    expected = (CAPTURE_ROUNDS + 1) * CAPTURE_JOBS
    if recorded != expected:
        raise RuntimeError(f"capture recorded {recorded} failures, expected {expected}")
    per_job = statistics.median(w - wo for w, wo in zip(with_capture, without, strict=True))
    return {
        "jobs": CAPTURE_JOBS,
        "rounds": CAPTURE_ROUNDS,
        "without_ms_per_job": round(statistics.median(without) / CAPTURE_JOBS * 1000, 3),
        "with_ms_per_job": round(statistics.median(with_capture) / CAPTURE_JOBS * 1000, 3),
        "overhead_ms_per_job": round(per_job / CAPTURE_JOBS * 1000, 3),
        "overhead_min_ms_per_job": round(
            (min(with_capture) - min(without)) / CAPTURE_JOBS * 1000, 3
        ),
        "capture_path_ms": await capture_path_ms(url, config, capture),
    }


async def skip_seeded_job_ids(url: str) -> int:
    """Start new job ids past every recorded failure's (the seed uses 1..FAILURES): a
    bench job colliding with one would make its capture an ON CONFLICT no-op, not a
    real write. Returns the first free job id."""
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT setval(pg_get_serial_sequence('procrastinate_jobs', 'id'), GREATEST("
            " (SELECT max(job_id) FROM jobsys_failures), (SELECT max(id) FROM procrastinate_jobs),"
            " 1)) + 1"
        )
        row = await cur.fetchone()
        return int(row[0]) if row else 1


async def count_failures(url: str) -> int:
    async with await psycopg.AsyncConnection.connect(url) as conn:
        cur = await conn.execute("SELECT count(*) FROM jobsys_failures")
        row = await cur.fetchone()
        return int(row[0]) if row else 0


async def capture_path_ms(url: str, config: Any, capture: Any) -> float:
    """Median time of the capture itself (describe + write), per failure."""
    from procrastinate.jobs import Job

    from jobsys.failures.capture import build_row
    from jobsys.lanes.execution import build_engine_app

    first_id = await skip_seeded_job_ids(url)  # no failure recorded yet for these ids
    before = await count_failures(url)
    app = build_engine_app(url, config=config, max_size=2)
    samples = []
    async with app.open_async():
        for i in range(CAPTURE_JOBS):
            job = Job(id=first_id + i, queue="profiles", lock=None, queueing_lock=None,
                      task_name="bench.fail", task_kwargs={"account_id": i % 50})  # fmt: skip
            try:
                bench_fail(account_id=i)
            except KeyError as exc:
                started = time.perf_counter()
                row = build_row(exc, job=job, config=config, lane="base", worker_name="b",
                                retrying=False)  # fmt: skip
                await capture.write(row, app.connector.pool)
                samples.append(time.perf_counter() - started)
    if await count_failures(url) - before != CAPTURE_JOBS:
        raise RuntimeError("capture_path_ms: not every capture was a new failure")
    return round(statistics.median(samples) * 1000, 3)


def run() -> dict[str, Any]:
    import logging

    from jobsys.config import load

    logging.disable(logging.CRITICAL)  # the failing jobs log errors by design
    config = load(CONFIG_DIR)
    admin, url = create_database()
    try:
        seeded = seed(url, config)
        argv = cases(seeded["queues"])
        db = asyncio.run(explain_times(url, argv))
        wall = command_times(url, argv)
        capture = asyncio.run(capture_overhead(url, config))
    finally:
        drop_database(admin, url)
    detail = {
        "rows": {"failures": FAILURES, "issues": ISSUES, "seed_seconds": seeded["seconds"]},
        "db_ms": {k: v["db_ms"] for k, v in db.items()},
        "command_s": wall,
        "capture": capture,
    }
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "failures.json").write_text(json.dumps(detail, indent=2))
    return summary(detail)


def summary(detail: dict[str, Any]) -> dict[str, float]:
    """Flat figures for the shared table (bench/__main__.py)."""
    wall = {k: v for k, v in detail["command_s"].items() if not k.endswith("(cpu)")}
    cpu = {k: v for k, v in detail["command_s"].items() if k.endswith("(cpu)")}
    return {
        "worst_list_db_ms": max(detail["db_ms"].values()),
        "default_list_db_ms": detail["db_ms"]["failures list default"],
        "issues_list_db_ms": detail["db_ms"]["issues list"],
        "worst_command_wall_s": max(wall.values()),
        "worst_command_cpu_s": max(cpu.values()),
        "capture_path_ms": detail["capture"]["capture_path_ms"],
        "capture_overhead_ms_per_job": detail["capture"]["overhead_ms_per_job"],
    }


RESULTS = Path(__file__).resolve().parent / "results"

if __name__ == "__main__":
    print(json.dumps(run(), indent=2))
    print((RESULTS / "failures.json").read_text())
