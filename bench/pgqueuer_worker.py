"""PgQueuer 1.6 draining its queue of no-op jobs, for comparison:
``python -m bench.pgqueuer_worker URL BATCH_SIZE``.

asyncpg, one QueueManager, ``batch_size`` jobs per dequeue, drain mode (exits when the
queue is empty), PgQueuer's defaults otherwise.
"""

from __future__ import annotations

import asyncio
import sys

import asyncpg
from pgqueuer import AsyncpgDriver, Job, Queries, QueueManager
from pgqueuer.domain.types import QueueExecutionMode


async def main(url: str, batch_size: int) -> None:
    conn = await asyncpg.connect(url)
    qm = QueueManager(Queries(AsyncpgDriver(conn)))

    @qm.entrypoint("bench.noop")
    async def noop(job: Job) -> None:
        return None

    await qm.run(batch_size=batch_size, mode=QueueExecutionMode.drain)
    await conn.close()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
