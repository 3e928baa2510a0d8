"""Helpers for the live-operations tests: a ``jobsys events`` subprocess, a real worker."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from jobsys.config import Config

REPO = Path(__file__).resolve().parents[2]


def jobsys_env(url: str, home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBSYS_")}
    env.update(
        JOBSYS_DATABASE_URL=url,
        JOBSYS_CONFIG_DIR=str(REPO / "config"),
        JOBSYS_HOME=str(home),
        PYTHONUNBUFFERED="1",
    )
    return env


def _default_sigint() -> None:
    # A test run in a background shell ignores SIGINT; the child must not inherit that.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class EventsProcess:
    """``jobsys events --json ARGS`` in a subprocess, its lines read by threads."""

    def __init__(self, url: str, home: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobsys", "events", "--json", *args],
            env=jobsys_env(url, home),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_default_sigint,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.raw: list[str] = []
        self.stderr: list[str] = []
        assert self.proc.stdout is not None and self.proc.stderr is not None
        threading.Thread(target=self._pump, args=(self.proc.stdout, True), daemon=True).start()
        threading.Thread(target=self._pump, args=(self.proc.stderr, False), daemon=True).start()

    def _pump(self, stream: Any, is_stdout: bool) -> None:
        for line in stream:
            if is_stdout:
                self.raw.append(line)
                self.lines.put(line)
            else:
                self.stderr.append(line)

    def wait_ready(self, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any("listening" in line for line in self.stderr):
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"jobsys events exited: {''.join(self.stderr)}")
            time.sleep(0.02)
        raise AssertionError(f"jobsys events not ready: {''.join(self.stderr)}")

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no matching event; got {self.raw!r} {self.stderr!r}")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            event = json.loads(line)
            if predicate(event):
                return event

    def find(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 10.0
    ) -> dict[str, Any]:
        """Like ``wait_for``, but an event already consumed by an earlier wait counts."""
        for line in list(self.raw):
            event = json.loads(line)
            if predicate(event):
                return event
        return self.wait_for(predicate, timeout)

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=10)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


async def run_worker_until_idle(url: str, config: Config, queues: list[str]) -> None:
    """A plain Procrastinate worker with jobsys's middlewares and the live services."""
    from jobsys.app import worker_middlewares
    from jobsys.lanes.execution import build_engine_app
    from jobsys.live.services import EventFlusher

    app = build_engine_app(url)
    async with app.open_async():
        stop = asyncio.Event()
        flusher = asyncio.create_task(
            EventFlusher(config.queues.live.max_notifications_per_second).run(app, stop)
        )
        try:
            await app.run_worker_async(
                queues=queues,
                wait=False,
                install_signal_handlers=False,
                listen_notify=False,
                worker_middleware=worker_middlewares(config),
            )
        finally:
            stop.set()
            await flusher
