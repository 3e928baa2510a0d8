"""A plain Procrastinate worker over ``jobsys.lanes.execution.build_engine_app`` running the
reaper test tasks, for tests that need a real process to ``kill -9``.

Environment: REAPER_TEST_DB (URL), REAPER_CONCURRENCY, REAPER_HEARTBEAT_SECONDS,
REAPER_POLL_SECONDS, REAPER_DEAD_AFTER_SECONDS.
"""

from __future__ import annotations

import asyncio
import os

import reaper_tasks  # noqa: F401  (registers the tasks)

from jobsys.lanes.execution import build_engine_app


async def main() -> None:
    app = build_engine_app(os.environ["REAPER_TEST_DB"], max_size=20)
    async with app.open_async():
        await app.run_worker_async(
            queues=["default"],
            concurrency=int(os.environ.get("REAPER_CONCURRENCY", "4")),
            update_heartbeat_interval=float(os.environ.get("REAPER_HEARTBEAT_SECONDS", "1")),
            stalled_worker_timeout=float(os.environ.get("REAPER_DEAD_AFTER_SECONDS", "4")),
            fetch_job_polling_interval=float(os.environ.get("REAPER_POLL_SECONDS", "1")),
            listen_notify=True,
            install_signal_handlers=True,
        )


if __name__ == "__main__":
    asyncio.run(main())
