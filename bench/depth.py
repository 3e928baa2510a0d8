"""Throughput at depth: jobsys vs PgQueuer draining a backlog of no-op jobs.

For each backlog (3,000, 20,000 and 100,000 jobs; ``BENCH_DEPTHS`` overrides, e.g.
``BENCH_DEPTHS=3000,20000``) and each of ``BENCH_DEPTH_ROUNDS`` rounds (default 2),
interleaved so that load from elsewhere on the machine hits both alike:

- jobsys: a full ``jobsys worker --drain`` (every middleware of
  ``jobsys.app.worker_middlewares`` on), the base lane at concurrency 10; the span is
  the first ``started`` to the last ``succeeded`` job event (database clock);
- at the first backlog, also jobsys draining the same no-op written as a sync
  function (``bench.noop_sync``: run in the lane's thread pool), for the sync/async
  ratio;
- PgQueuer 1.6 (``bench.pgqueuer_worker``) at ``batch_size=10``; the span is the first
  ``picked`` to the last ``successful`` row of ``pgqueuer_log`` (database clock; its
  acknowledgements are buffered, so the span includes its last flush). It runs with no
  cap on the jobs it has at once (it fetches the next batch while the last one runs);
- at 20,000 (``CAPPED_DEPTH``, when it is one of the depths), also both under a cap:
  jobsys's lane at concurrency 20 against PgQueuer at ``max_concurrent_tasks=20`` (its
  per-worker cap; PgQueuer requires at least twice ``batch_size``), and PgQueuer with
  the entrypoint's ``concurrency_limit=10`` (enforced in its dequeue query) against
  jobsys's lane of 10. The issue's target compares with uncapped PgQueuer; these rows
  say how much of the gap is the cap.

Both run on one throwaway database of the same server. Also reported per system:
commits per job (``pg_stat_database.xact_commit`` over the drain: every statement on an
autocommit connection is one, so this counts round trips that write) and the dead
tuples ``pg_stat_user_tables`` shows on the job table after the drain.

Only ratios within one run mean anything on a shared machine.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import psycopg

from bench.live import throwaway_database
from bench.runtime import EVENTS_SPAN, QUEUES_YAML, REPO, _defer_noops, _env, _rate, _reset

DEPTHS = (3_000, 20_000, 100_000)
ROUNDS = 2
PGQUEUER_BATCH_SIZE = 10
#: The base lane (concurrency 1 in runtime's config) scaled to its usual 10.
CONCURRENCY_SCALE = 10
#: The depth at which both also run under a cap (the issue's target depth).
CAPPED_DEPTH = 20_000
#: PgQueuer's smallest per-worker cap at ``batch_size=10`` (it requires 2 x batch_size).
PGQUEUER_MAX_CONCURRENT = 2 * PGQUEUER_BATCH_SIZE


def _depths() -> tuple[int, ...]:
    raw = os.environ.get("BENCH_DEPTHS")
    return tuple(int(d) for d in raw.split(",")) if raw else DEPTHS


def _commits(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0]) if row else 0


def _dead_tuples(url: str, table: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = %s", (table,)
        ).fetchone()
    return int(row[0]) if row else 0


def _drain(
    url: str, command: list[str], env: dict[str, str] | None, count: int, span: str, table: str
) -> dict[str, float]:
    """Run ``command`` until it exits (the queue drained): rate, commits, dead tuples."""
    before = _commits(url)
    subprocess.run(command, env=env, cwd=REPO, check=True, stderr=subprocess.DEVNULL)
    commits = _commits(url) - before
    return {
        "jobs_per_s": round(_rate(url, span), 1),
        "commits_per_job": round(commits / count, 2),
        "dead_tuples_after": _dead_tuples(url, table),
    }


def _jobsys_drain(
    url: str,
    env: dict[str, str],
    count: int,
    task: str = "bench.noop",
    concurrency: int = CONCURRENCY_SCALE,
) -> dict[str, float]:
    _reset(url)
    _defer_noops(url, count, task)
    command = [sys.executable, "-m", "jobsys", "worker", "--drain"]
    command += ["--concurrency-scale", str(concurrency)]
    return _drain(url, command, env, count, EVENTS_SPAN, "procrastinate_jobs")


async def _pgqueuer_setup(url: str, count: int, install: bool) -> None:
    import asyncpg
    from pgqueuer import AsyncpgDriver, Queries

    conn = await asyncpg.connect(url)
    try:
        queries = Queries(AsyncpgDriver(conn))
        if install:
            await queries.install()
        await conn.execute("TRUNCATE pgqueuer, pgqueuer_log, pgqueuer_statistics")
        await queries.enqueue(["bench.noop"] * count, [None] * count, [0] * count)
    finally:
        await conn.close()


#: PgQueuer's span: first ``picked`` to last ``successful`` log row (database clock).
PGQUEUER_SPAN = (
    "SELECT count(*) FILTER (WHERE status = 'successful'), "
    "extract(epoch FROM max(created) FILTER (WHERE status = 'successful') "
    "- min(created) FILTER (WHERE status = 'picked')) FROM pgqueuer_log"
)


def _pgqueuer_drain(
    url: str, count: int, install: bool, max_concurrent: int = 0, limit: int = 0
) -> dict[str, float]:
    asyncio.run(_pgqueuer_setup(url, count, install))
    command = [sys.executable, "-m", "bench.pgqueuer_worker", url, str(PGQUEUER_BATCH_SIZE)]
    command += [str(max_concurrent), str(limit)]
    return _drain(url, command, None, count, PGQUEUER_SPAN, "pgqueuer")


#: How each system drains: jobsys's task and lane concurrency, or PgQueuer's caps
#: (``max_concurrent_tasks``, entrypoint ``concurrency_limit``; 0 for none).
JOBSYS_SYSTEMS = {
    "jobsys": ("bench.noop", CONCURRENCY_SCALE),
    "jobsys_sync": ("bench.noop_sync", CONCURRENCY_SCALE),  # the same no-op, a plain function
    "jobsys_c20": ("bench.noop", 20),
}
PGQUEUER_SYSTEMS = {
    "pgqueuer": (0, 0),
    "pgqueuer_max_concurrent_20": (PGQUEUER_MAX_CONCURRENT, 0),
    "pgqueuer_limit_10": (0, 10),
}
#: The systems run under a cap at ``CAPPED_DEPTH``: (jobsys, PgQueuer) pairs compared.
CAPPED_PAIRS = {
    "cap_20": ("jobsys_c20", "pgqueuer_max_concurrent_20"),
    "cap_10": ("jobsys", "pgqueuer_limit_10"),
}


def run() -> dict[str, Any]:
    rounds = int(os.environ.get("BENCH_DEPTH_ROUNDS", ROUNDS))
    samples: dict[tuple[str, int], list[dict[str, float]]] = {}
    with throwaway_database() as url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config"
        config.mkdir()
        (config / "queues.yaml").write_text(QUEUES_YAML)
        (config / "schedule.yaml").write_text("allow_empty: true\nentries: {}\n")
        env = _env(url, config, Path(tmp) / "marks.txt")
        installed = False
        for depth in _depths():
            for round_ in range(rounds):
                # Alternate who goes first, so a slow spell elsewhere hits both alike.
                order = ("jobsys", "pgqueuer") if round_ % 2 == 0 else ("pgqueuer", "jobsys")
                if depth == _depths()[0]:
                    order = (*order, "jobsys_sync")
                if depth == CAPPED_DEPTH:
                    capped = ("jobsys_c20", *(theirs for _, theirs in CAPPED_PAIRS.values()))
                    order = (*order, *(capped if round_ % 2 == 0 else capped[::-1]))
                for system in order:
                    if system in JOBSYS_SYSTEMS:
                        task, concurrency = JOBSYS_SYSTEMS[system]
                        sample = _jobsys_drain(url, env, depth, task, concurrency)
                    else:
                        max_concurrent, limit = PGQUEUER_SYSTEMS[system]
                        sample = _pgqueuer_drain(url, depth, not installed, max_concurrent, limit)
                        installed = True
                    samples.setdefault((system, depth), []).append(sample)
                    print(
                        f"depth bench {depth} round {round_ + 1} {system}: {sample}",
                        file=sys.stderr,
                        flush=True,
                    )
    results: dict[str, Any] = {"rounds": rounds}
    for depth in _depths():
        ours, theirs = samples[("jobsys", depth)], samples[("pgqueuer", depth)]
        jobsys_rate = statistics.median(s["jobs_per_s"] for s in ours)
        pgqueuer_rate = statistics.median(s["jobs_per_s"] for s in theirs)
        results[f"d{depth}"] = {
            "jobsys_jobs_per_s": [s["jobs_per_s"] for s in ours],
            "pgqueuer_jobs_per_s": [s["jobs_per_s"] for s in theirs],
            "ratio_median": round(jobsys_rate / max(pgqueuer_rate, 1e-9), 2),
            "jobsys_commits_per_job": statistics.median(s["commits_per_job"] for s in ours),
            "pgqueuer_commits_per_job": statistics.median(s["commits_per_job"] for s in theirs),
            "jobsys_dead_tuples_after": max(s["dead_tuples_after"] for s in ours),
        }
    if (CAPPED_PAIRS["cap_20"][0], CAPPED_DEPTH) in samples:
        capped_results: dict[str, Any] = {}
        for name, (ours_name, theirs_name) in CAPPED_PAIRS.items():
            ours = samples[(ours_name, CAPPED_DEPTH)]
            theirs = samples[(theirs_name, CAPPED_DEPTH)]
            capped_results[name] = {
                f"{ours_name}_jobs_per_s": [s["jobs_per_s"] for s in ours],
                f"{theirs_name}_jobs_per_s": [s["jobs_per_s"] for s in theirs],
                "ratio_median": round(
                    statistics.median(s["jobs_per_s"] for s in ours)
                    / max(statistics.median(s["jobs_per_s"] for s in theirs), 1e-9),
                    2,
                ),
            }
        results[f"d{CAPPED_DEPTH}"]["capped"] = capped_results
    depths = _depths()
    sync = [s["jobs_per_s"] for s in samples[("jobsys_sync", depths[0])]]
    results[f"d{depths[0]}"]["jobsys_sync_jobs_per_s"] = sync
    results["sync_vs_async"] = round(
        statistics.median(sync)
        / max(statistics.median(s["jobs_per_s"] for s in samples[("jobsys", depths[0])]), 1e-9),
        2,
    )
    if len(depths) > 1:
        shallow = statistics.median(s["jobs_per_s"] for s in samples[("jobsys", depths[0])])
        deep = statistics.median(s["jobs_per_s"] for s in samples[("jobsys", depths[-1])])
        results["jobsys_deepest_vs_shallowest"] = round(deep / max(shallow, 1e-9), 2)
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<32} {value}")
