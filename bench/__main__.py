"""Run every benchmark and print a table; results go to ``bench/results/``."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bench import live
from bench import reaper as reaper_bench

RESULTS = Path(__file__).resolve().parent / "results"


def median_wall(cmd: list[str], runs: int = 7) -> float:
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=False)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def startup() -> dict[str, float]:
    jobsys = str(Path(sys.executable).with_name("jobsys"))
    return {
        "help_median_s": median_wall([jobsys, "--help"]),
        "config_check_median_s": median_wall([jobsys, "config", "check"]),
    }


def main() -> None:
    RESULTS.mkdir(exist_ok=True)
    results = {"startup": startup()}
    results["reaper"] = reaper_bench.run()
    results["schedule_fanout"] = __import__("bench.schedule").schedule.run()
    results["retry"] = __import__("bench.retry", fromlist=["run"]).run()
    results["live"] = live.run()
    from bench import failures as failures_bench  # failures & issues at 1M rows

    results["failures"] = failures_bench.run()
    results["runtime"] = __import__("bench.runtime", fromlist=["run"]).run()
    for name, data in results.items():
        for key, value in data.items():
            print(f"{name:<12} {key:<28} {value:10.3f}")
    (RESULTS / "results.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
