"""One of the processes of the unique-jobs race: ``UNIQUE_DEFERS`` defers of the same
unique job over ``UNIQUE_CONNECTIONS`` connections at once (the shared test server has
100 connections for everyone), all released at ``UNIQUE_START`` (a time.time() value);
prints one JSON list of [job_id, duplicate] pairs.

Environment: UNIQUE_DB (URL), UNIQUE_CONFIG (config dir), UNIQUE_DEFERS,
UNIQUE_CONNECTIONS, UNIQUE_START.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from pathlib import Path

from jobsys import task
from jobsys.config import load as load_config_files
from jobsys.db.connect import connect
from jobsys.jobs import defer


@task(queue="default", name="uq.work", unique_for="1h", unique_keys=("account_id",))
def work(account_id: int, note: str = "") -> None:
    return None


async def one(url: str, plans: list[list[defer.Planned]]) -> list[tuple[int, bool]]:
    async with connect(url) as conn:
        await asyncio.sleep(max(0.0, float(os.environ["UNIQUE_START"]) - time.time()))
        out = []
        for planned in plans:
            [outcome] = await defer.insert_with_outcome(conn, planned)
            out.append(outcome)
        return out


async def main() -> None:
    url = os.environ["UNIQUE_DB"]
    config = load_config_files(Path(os.environ["UNIQUE_CONFIG"]))
    count = int(os.environ["UNIQUE_DEFERS"])
    plans = [
        defer.plan(config, "uq.work", [{"account_id": 42, "note": f"{os.getpid()}-{n}"}])
        for n in range(count)
    ]
    connections = int(os.environ["UNIQUE_CONNECTIONS"])
    shares = [plans[n::connections] for n in range(connections)]
    results = await asyncio.gather(*(one(url, share) for share in shares))
    sys.stdout.write(json.dumps([o for r in results for o in r]) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
