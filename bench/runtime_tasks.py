"""Tasks of the runtime benchmark (``bench.runtime``): a no-op and a pickup marker."""

from __future__ import annotations

import os
import time

from jobsys import task


@task(queue="bench", name="bench.noop")
async def noop() -> None:
    return None


@task(queue="bench", name="bench.mark")
async def mark(seq: int) -> None:
    with open(os.environ["BENCH_MARKS"], "a") as f:
        f.write(f"{seq} {time.time():.6f}\n")


@task(queue="bench", name="bench.noop_sync")
def noop_sync() -> None:
    return None
