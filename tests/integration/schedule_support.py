"""Helpers for the schedule tests: a config folder with a chosen schedule.yaml, the
subprocess entry point's path, waiting on conditions with deadlines."""

from __future__ import annotations

import shutil
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
