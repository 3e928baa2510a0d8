"""Flow limits with real worker processes, checked from the ledger of real starts
(each run appends ``start``/``end`` with its account and time to a file):

- rate 5/s per account, 4 workers x concurrency 10, 2,000 jobs over 20 accounts: in
  every 1-second window, per account, at most 5 starts (real starts, and the claims'
  ledger), and the pace at least 90% of the limit's maximum (the windows reopen by
  themselves, on time: not at the poll, not a few round trips late);
- concurrency 2 per account: never more than 2 running at once per account (sampled
  and from the ledger), and the other accounts' jobs, queued behind a hot account's
  backlog, start at once.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import psycopg
from rt_support import WorkerProcess, environment, query, wait_until

TASKS = """
import asyncio, os, time
from jobsys import task

def _log(event, account_id, n):
    with open(os.environ["FLOW_LOG"], "a") as f:
        f.write(f"{event} {account_id} {n} {time.time():.6f}\\n")

@task(queue="accounts", name="flow.hit")
async def hit(account_id: int, n: int, seconds: float = 0.0) -> None:
    _log("start", account_id, n)
    await asyncio.sleep(seconds)
    _log("end", account_id, n)
"""

QUEUES = """
base:
  concurrency: 10
  queues: [accounts, maintenance]
throttle:
  accounts: {throttle}
worker:
  poll_interval_seconds: 30
  heartbeat_interval_seconds: 1
  dead_after_seconds: 30
"""


def setup(tmp: Path, db_url: str, throttle: str) -> dict[str, str]:
    config = tmp / "config"
    config.mkdir()
    (config / "queues.yaml").write_text(QUEUES.format(throttle=throttle))
    (config / "schedule.yaml").write_text("allow_empty: true\nentries: {}\n")
    (tmp / "flow_tasks.py").write_text(TASKS)
    env = environment(tmp, db_url, config)
    env.update(JOBSYS_APP="flow_tasks", FLOW_LOG=str(tmp / "ledger.log"))
    return env


def defer(db_url: str, jobs: list[tuple[int, int, float]]) -> None:
    """(account, n, seconds) each, in this order (ids ascending)."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "SELECT procrastinate_defer_jobs_v1(array_agg(ROW('accounts', 'flow.hit', 0, NULL, "
            "NULL, jsonb_build_object('account_id', a, 'n', n, 'seconds', s), NULL)"
            "::procrastinate_job_to_defer_v1 ORDER BY o)) "
            "FROM unnest(%s::int[], %s::int[], %s::float8[]) WITH ORDINALITY AS j(a, n, s, o)",
            ([j[0] for j in jobs], [j[1] for j in jobs], [j[2] for j in jobs]),
        )


def ledger(tmp: Path) -> list[tuple[str, int, int, float]]:
    path = tmp / "ledger.log"
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        event, account, n, at = line.split()
        rows.append((event, int(account), int(n), float(at)))
    return rows


#: How much later than its recorded start a task's first line may run on this shared,
#: loaded machine (measured: 0.1-0.2 s at load averages of 11-15 on 2 cores).
JITTER_SECONDS = 0.3


def most_in_a_second(times_by_key: dict[int, list[float]], jitter: float = 0.0) -> int:
    """The most starts of one key in any window of 1 s minus ``jitter``."""
    worst = 0
    for times in times_by_key.values():
        times = sorted(times)
        for i, t in enumerate(times):
            worst = max(worst, sum(1 for u in times[i:] if u < t + 1.0 - jitter))
    return worst


def test_rate_per_account_across_four_workers(db_url: str, tmp_path: Path) -> None:
    env = setup(tmp_path, db_url, "{per_key: account_id, rate: 5/s}")
    accounts, per_account, limit = 20, 100, 5
    defer(db_url, [(a, n, 0.0) for n in range(per_account) for a in range(accounts)])
    workers = [WorkerProcess(env, tmp_path, "--lane", "base") for _ in range(4)]
    try:
        wait_until(
            lambda: sum(1 for e in ledger(tmp_path) if e[0] == "end") == accounts * per_account,
            120,
            "all 2,000 jobs",
        )
    finally:
        for worker in workers:
            worker.kill()
    starts: dict[int, list[float]] = defaultdict(list)
    for event, account, _, at in ledger(tmp_path):
        if event == "start":
            starts[account].append(at)
    claims: dict[int, list[float]] = defaultdict(list)
    for bucket, at in query(db_url, "SELECT bucket, extract(epoch FROM started_at)::float8 "
                                    "FROM jobsys_flow_starts"):  # fmt: skip
        claims[int(bucket.rsplit(":", 1)[1])].append(at)
    print(
        f"most in 1 s: recorded starts {most_in_a_second(claims)}, task first lines "
        f"{most_in_a_second(starts)} (in 1 s - {JITTER_SECONDS} s: "
        f"{most_in_a_second(starts, JITTER_SECONDS)})"
    )
    assert most_in_a_second(claims) <= limit
    # The task's own first line runs a moment after its start is recorded (the worker's
    # event loop, on a loaded machine); windows shorter by that jitter hold exactly.
    assert most_in_a_second(starts, JITTER_SECONDS) <= limit
    everything = sorted(t for times in starts.values() for t in times)
    # After the first window's burst, the rest at the limit's pace: 1,900 starts at 100/s.
    after_burst = len(everything) - accounts * limit
    rate = after_burst / (everything[-1] - everything[0])
    print(f"throughput after the first window: {rate:.1f} starts/s (max {accounts * limit})")
    assert rate >= 0.9 * accounts * limit, f"{rate:.1f} starts/s"


def test_concurrency_per_account_without_blocking_other_accounts(
    db_url: str, tmp_path: Path
) -> None:
    env = setup(tmp_path, db_url, "{per_key: account_id, concurrency: 2}")
    hot = [(1, n, 0.2) for n in range(60)]  # 60 x 0.2 s at 2 at once: 6 s of backlog
    others = [(a, n, 0.2) for a in range(2, 11) for n in range(4)]
    defer(db_url, hot + others)  # the others queue behind the hot account
    workers = [WorkerProcess(env, tmp_path, "--lane", "base") for _ in range(2)]
    sampled = 0
    try:
        for worker in workers:
            worker.wait_for_output("worker_ready", timeout=60)
        ready = time.time()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = query(
                db_url,
                "SELECT args->>'account_id', count(*) FROM procrastinate_jobs "
                "WHERE status = 'doing' GROUP BY 1",
            )
            sampled = max([sampled, *(int(c) for _, c in running)])
            done = query(
                db_url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'"
            )
            if done[0][0] == len(hot) + len(others):
                break
            time.sleep(0.05)
    finally:
        for worker in workers:
            worker.kill()
    assert sampled <= 2, f"{sampled} jobs of one account running at once (sampled)"
    events = ledger(tmp_path)
    assert sum(1 for e in events if e[0] == "end") == len(hot) + len(others)
    for account in range(1, 11):
        timeline = sorted(
            (at, 1 if event == "start" else -1) for event, a, _, at in events if a == account
        )
        current = peak = 0
        for _, delta in timeline:
            current += delta
            peak = max(peak, current)
        assert peak <= 2, f"account {account}: {peak} running at once (ledger)"
    # The other accounts were not held behind the hot one: each started within 3 s of
    # the workers being ready (the hot account alone needs 6 s).
    for account in range(2, 11):
        first = min(at for event, a, _, at in events if a == account and event == "start")
        assert first - ready < 3.0, f"account {account} waited {first - ready:.1f} s"
