"""Helpers for the schedule tests: a config folder with a chosen schedule.yaml, the
subprocess entry point's path, waiting on conditions with deadlines."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
PROC = HERE / "schedule_proc.py"
T = TypeVar("T")


def config_dir(tmp: Path, schedule_yaml: str) -> Path:
    """A config folder: the shipped queues.yaml and ``schedule_yaml``."""
    folder = tmp / "config"
    folder.mkdir(exist_ok=True)
    shutil.copy(REPO / "config" / "queues.yaml", folder / "queues.yaml")
    (folder / "schedule.yaml").write_text(schedule_yaml)
    return folder


def wait_for(
    condition: Callable[[], T], *, timeout: float, interval: float = 0.1, what: str = ""
) -> T:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(interval)
