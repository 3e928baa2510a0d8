"""A real process for the schedule tests: ``scheduler URL CONFIG_DIR`` runs the
scheduler service; ``worker URL QUEUE`` runs a Procrastinate worker on one queue.
Stops on SIGTERM. Each enqueued tick is printed as a JSON line on stdout."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path


class TickPrinter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "action", None) == "schedule_tick":
            print(json.dumps({"entry": record.entry, "status": record.status}), flush=True)  # type: ignore[attr-defined]


async def main(mode: str, url: str, arg: str) -> None:
    from jobsys.config.application import import_modules, load_config
    from jobsys.lanes.execution import build_engine_app
    from jobsys.settings import Settings

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    if mode == "scheduler":
        from jobsys.schedule.scheduler import Scheduler

        config = load_config(Settings(database_url=url, config_dir=Path(arg)))
        logging.getLogger("jobsys").addHandler(TickPrinter())
        logging.getLogger("jobsys").setLevel(logging.INFO)
        app = build_engine_app(url, max_size=2)
        async with app.open_async():
            await Scheduler(config).run(app, stop)
    else:
        import_modules(())
        app = build_engine_app(url, max_size=4)
        async with app.open_async():
            worker = asyncio.create_task(
                app.run_worker_async(queues=[arg], concurrency=1, install_signal_handlers=False)
            )
            await stop.wait()
            worker.cancel()
            await asyncio.gather(worker, return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
