"""The runtime in-process: supervision of background services, lifecycle hooks."""

from __future__ import annotations

import asyncio
from typing import Any

from conftest import CONFIG_DIR

from jobsys.config import load
from jobsys.lanes.lifecycle import Snapshot
from jobsys.lanes.runtime import EXIT_BACKGROUND_LOST, Runtime
from jobsys.lanes.supervisor import Backoff


class Broken:
    name = "broken"

    def __init__(self) -> None:
        self.starts = 0

    async def run(self, app: Any, stop: asyncio.Event) -> None:
        self.starts += 1
        raise RuntimeError("cannot reach the scheduler's table")


class Recorder:
    def __init__(self) -> None:
        self.calls: list[str] = []
        self.ready_snapshot: Snapshot | None = None

    def ready(self, snapshot: Snapshot) -> None:
        self.calls.append("ready")
        self.ready_snapshot = snapshot

    def status(self, snapshot: Snapshot) -> None:
        self.calls.append("status")

    def watchdog(self) -> None:
        self.calls.append("watchdog")

    def stopping(self, snapshot: Snapshot) -> None:
        self.calls.append("stopping")


async def test_a_service_that_cannot_be_restored_stops_the_worker_nonzero(db_url: str) -> None:
    config = load(CONFIG_DIR)
    broken, hooks = Broken(), Recorder()
    runtime = Runtime(
        config,
        db_url,
        [config.lanes["ai_face_queue"]],
        services=[broken],
        hooks=[hooks],
        install_signal_handlers=False,
        backoff=Backoff(first_seconds=0.05, max_seconds=0.1, max_failures=3),
    )
    result = await asyncio.wait_for(runtime.run(), 30)
    assert result.exit_code == EXIT_BACKGROUND_LOST
    assert "service broken failed and could not be restored" in result.reason
    assert broken.starts == 3
    assert hooks.calls[0] == "ready" and hooks.calls[-1] == "stopping"
    assert hooks.ready_snapshot is not None and hooks.ready_snapshot.listening is True
