"""Run the benchmarks (``make bench``) and write ``bench/results/results.json``.

Each module measures jobsys side by side with plain Procrastinate, PgQueuer (or the raw
operation) on the same database in the same run, since only ratios hold on a noisy
machine, and prints its own table. ``python -m bench NAME ...`` runs a subset.
Database: ``JOBSYS_BENCH_DATABASE_URL``, else ``JOBSYS_TEST_DATABASE_URL``, else the
local server at 127.0.0.1:5432.
"""

from __future__ import annotations

import importlib
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
#: name -> module under bench/ exposing run() -> dict
MODULES = (
    "runtime",
    "depth",
    "claim",
    "producers",
    "schedule",
    "failures",
    "retry",
    "live",
    "reaper",
    "web",
    "jobmgmt",
    "flow",
    "reads",
)


def median_wall(cmd: list[str], runs: int = 7, env: dict[str, str] | None = None) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False, env=env)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def startup() -> dict[str, float]:
    """Median wall time of `jobsys --help` (target < 0.4 s) and of a simple read
    command, `jobsys db current` (target < 0.7 s)."""
    jobsys = str(Path(sys.executable).with_name("jobsys"))
    url = os.environ.get("JOBSYS_BENCH_DATABASE_URL") or os.environ.get(
        "JOBSYS_TEST_DATABASE_URL", DEFAULT_URL
    )
    env = {**os.environ, "JOBSYS_DATABASE_URL": url}
    result = {
        "help_median_s": median_wall([jobsys, "--help"]),
        "db_current_median_s": median_wall([jobsys, "db", "current"], env=env),
        "config_check_median_s": median_wall([jobsys, "config", "check"], env=env),
    }
    print("startup (median of 7 runs)")
    for key, value in result.items():
        print(f"  {key:<26} {value:8.3f} s")
    return result


def _flat(prefix: str, value: Any) -> list[tuple[str, Any]]:
    if isinstance(value, dict):
        return [item for k, v in value.items() for item in _flat(f"{prefix}.{k}", v)]
    return [(prefix, value)]


def show(name: str, data: Any) -> None:
    """Every figure of a module, one per line (modules may print more detail)."""
    for key, value in _flat(name, data):
        shown = f"{value:.2f}" if isinstance(value, float) else json.dumps(value, default=str)
        print(f"  {key:<52} {shown[:60]}")


def main(argv: list[str]) -> None:
    chosen = argv or ["startup", *MODULES]
    unknown = sorted(set(chosen) - {"startup", *MODULES})
    if unknown:
        sys.exit(f"unknown benchmark(s) {', '.join(unknown)}; known: startup, {', '.join(MODULES)}")
    RESULTS.mkdir(exist_ok=True)
    results: dict[str, Any] = {}
    for name in chosen:
        runner: Callable[[], Any] = (
            startup if name == "startup" else importlib.import_module(f"bench.{name}").run
        )
        print(f"\n== {name} ==", flush=True)
        started = time.perf_counter()
        results[name] = runner()
        show(name, results[name])
        print(f"({name}: {time.perf_counter() - started:.0f} s)", flush=True)
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2, default=str))
    print(f"\nresults written to {RESULTS / 'results.json'}")


if __name__ == "__main__":
    main(sys.argv[1:])
