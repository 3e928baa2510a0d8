"""Plain Procrastinate at its defaults, for comparison: ``python -m bench.plain_worker URL C``."""

from __future__ import annotations

import asyncio
import sys

import procrastinate


def main(url: str, concurrency: int) -> None:
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=url))

    @app.task(name="bench.noop", queue="bench")
    async def noop() -> None:
        return None

    async def run() -> None:
        async with app.open_async():
            await app.run_worker_async(queues=["bench"], concurrency=concurrency, wait=False)

    asyncio.run(run())


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
