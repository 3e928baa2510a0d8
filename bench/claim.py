"""Where the claim's time goes at depth: EXPLAIN (ANALYZE, BUFFERS) of the lane's claim
(``jobsys.engine.queries.CLAIM_JOBS``) with 3,000, 20,000 and 100,000 jobs waiting.

The statistics are stale on purpose (the table was analyzed while it held only
finished jobs, as happens on a server with ``autovacuum = off`` or one whose autovacuum
lags the churn), and each depth first goes through churn: 200 claims of 10 jobs, each
job finished on its own, leaving dead tuples behind. One job in ten carries a lock
(ten jobs per lock), so the lock rule's lookup runs too. Reported per depth: the claim's
execution time, shared buffers it touched, and ``n_dead_tup`` of the job table.
The full plans go to ``bench/results/claim_plans.txt``.
"""

from __future__ import annotations

import json
from typing import Any

import psycopg

from bench.depth import _depths
from bench.live import throwaway_database
from bench.runtime import REPO

CHURN_CLAIMS = 200
CLAIM_SIZE = 10
DEFER_LOCKED = (
    "SELECT procrastinate_defer_jobs_v1(array_agg(ROW('bench', 'bench.noop', 0, "
    "CASE WHEN g %% 10 = 0 THEN 'lock-' || (g / 100) END, NULL, '{}'::jsonb, NULL)"
    "::procrastinate_job_to_defer_v1)) FROM generate_series(1, %s) AS g"
)


def _claim_sql() -> str:
    from jobsys.engine.queries import CLAIM_JOBS

    return CLAIM_JOBS


def run() -> dict[str, Any]:
    claim = _claim_sql()
    params = {"queues": ["bench", "maintenance"], "worker_id": None, "limit": CLAIM_SIZE}
    results: dict[str, Any] = {}
    plans: list[str] = []
    with throwaway_database() as url, psycopg.connect(url, autocommit=True) as conn:
        conn.execute(DEFER_LOCKED, (2_000,))
        conn.execute("UPDATE procrastinate_jobs SET status = 'succeeded'")
        conn.execute("ANALYZE procrastinate_jobs")  # the last statistics it will get
        for depth in _depths():
            conn.execute(DEFER_LOCKED, (depth,))
            for _ in range(CHURN_CLAIMS):
                for row in conn.execute(claim, params).fetchall():
                    conn.execute(
                        "SELECT procrastinate_finish_job_v1(%s, 'succeeded', false)", (row[0],)
                    )
            conn.execute("SELECT pg_stat_clear_snapshot()")
            dead = conn.execute(
                "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'procrastinate_jobs'"
            ).fetchone()
            explained = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + claim, params
            ).fetchone()
            assert explained is not None and dead is not None
            plan = explained[0][0]
            text = conn.execute("EXPLAIN (ANALYZE, BUFFERS) " + claim, params).fetchall()
            plans.append(f"=== {depth} waiting\n" + "\n".join(r[0] for r in text))
            results[f"d{depth}"] = {
                "claim_ms": round(plan["Execution Time"], 2),
                "shared_buffers_hit": plan["Plan"].get("Shared Hit Blocks", 0),
                "dead_tuples": int(dead[0]),
            }
            conn.execute("DELETE FROM procrastinate_jobs WHERE status = 'todo'")
    out = REPO / "bench" / "results"
    out.mkdir(exist_ok=True)
    (out / "claim_plans.txt").write_text("\n\n".join(plans) + "\n")
    (out / "claim.json").write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    for key, value in run().items():
        print(f"{key:<12} {value}")
