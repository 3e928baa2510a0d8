"""Fence notes: how a worker process fenced while its database was unreachable still
shows as ``fenced`` in ``jobsys workers``, not ``dead``.

A process whose lease runs out (no beat reached the database for ``dead_after`` minus
the margin) exits at once and can write nothing to the database: its row keeps
``running`` with a stale heartbeat, which reads as ``dead``. So before it exits it
leaves a note, one small JSON file per process in ``<home>/fenced/`` (local, no
network, no wait). The next worker process started with the same home (systemd
restarts it) reports the notes once it has registered: each noted row still in a
live or dead state becomes ``fenced`` with the time the note gives, and the note is
removed. A note that cannot be written (read-only home) or reported (the database
still away) changes nothing else: the row reads ``dead`` until a later start.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

logger = logging.getLogger("jobsys.lanes.fence_notes")

FOLDER = "fenced"


@dataclass(frozen=True)
class FenceNote:
    path: Path
    process_id: str
    fenced_at: datetime
    reason: str


def _file_name(process_id: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in process_id) + ".json"


def leave(home: Path, process_id: str, reason: str) -> None:
    """Note that ``process_id`` fenced itself now (best effort: never raises; it runs
    right before the process exits)."""
    folder = home / FOLDER
    body = {"process_id": process_id, "fenced_at": datetime.now(UTC).isoformat(), "reason": reason}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        temp = folder / f".{_file_name(process_id)}.{os.getpid()}"
        temp.write_text(json.dumps(body))
        temp.replace(folder / _file_name(process_id))
    except OSError as exc:
        logger.warning(
            f"could not leave a fence note in {folder} ({exc}); `jobsys workers` will show "
            "this process as dead",
            extra={"action": "fence_note_failed"},
        )


def pending(home: Path) -> list[FenceNote]:
    """The notes left in ``home`` (unreadable ones are skipped, and logged)."""
    folder = home / FOLDER
    if not folder.is_dir():
        return []
    notes = []
    for path in sorted(folder.glob("*.json")):
        try:
            body: dict[str, Any] = json.loads(path.read_text())
            notes.append(
                FenceNote(
                    path,
                    str(body["process_id"]),
                    datetime.fromisoformat(body["fenced_at"]),
                    str(body.get("reason", "")),
                )
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            logger.warning(
                f"unreadable fence note {path} ({exc}); left in place",
                extra={"action": "fence_note_unreadable"},
            )
    return notes


def done(note: FenceNote) -> None:
    with contextlib.suppress(FileNotFoundError):
        note.path.unlink()
