"""PgQueuer 1.6 draining its queue of no-op jobs, for comparison:
``python -m bench.pgqueuer_worker URL BATCH_SIZE [MAX_CONCURRENT_TASKS [CONCURRENCY_LIMIT]]``.

asyncpg, one QueueManager, ``batch_size`` jobs per dequeue, drain mode (exits when the
queue is empty), PgQueuer's defaults otherwise: no cap on the jobs it runs at once (it
fetches the next batch while the last one runs). The two optional caps, 0 for none:

- ``MAX_CONCURRENT_TASKS``: ``QueueManager.run(max_concurrent_tasks=...)``, this
  worker's cap on picked jobs (PgQueuer requires at least twice ``batch_size``), the
  kind of cap a jobsys lane's concurrency is;
- ``CONCURRENCY_LIMIT``: the entrypoint's ``concurrency_limit``, a cap across all
  workers that PgQueuer enforces in its dequeue query.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.domain.types import QueueExecutionMode


async def main(
    url: str, batch_size: int, max_concurrent_tasks: int = 0, concurrency_limit: int = 0
) -> None:
    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("bench.noop", concurrency_limit=concurrency_limit)
    async def noop(job: Job) -> None:
        return None

    await qm.run(
        batch_size=batch_size,
        mode=QueueExecutionMode.drain,
        max_concurrent_tasks=max_concurrent_tasks or None,
    )
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], *(int(a) for a in sys.argv[2:5])))
