"""The local failure spool: where a failure goes when the database cannot take it now
(locked table, blip, permission), so the job can finish and the failure is written later.

One JSON line per failure (args already redacted), appended and fsync'd under an
exclusive ``flock``, in ``<home>/spool/failures-<host>-<pid>.jsonl``. Replay takes a
file by renaming it (atomic), then waits for any writer still holding it; a writer
that finds its file renamed under it writes again to the live path. Records that the
database refuses as invalid (not a passing problem) go to ``dead/`` with a log line,
never silently dropped. Replaying twice is harmless: the failures store ignores a
(job, attempt) it already has.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from jobsys.failures.store import FailureRow, row_from_fields

logger = logging.getLogger(__name__)

LIVE_PREFIX = "failures-"
TAKEN_PREFIX = "replaying-"


class PoisonRecord(Exception):
    """The database refused a spooled record for good (invalid data, not a blip)."""


@dataclass(frozen=True)
class ReplayResult:
    replayed: int = 0
    remaining: int = 0
    dead: int = 0


def encode(row: FailureRow) -> str:
    data = asdict(row)
    data["occurred_at"] = row.occurred_at.isoformat() if row.occurred_at else None
    return json.dumps(data, default=str, separators=(",", ":"))


def decode(line: str) -> FailureRow:
    data = json.loads(line)
    if data.get("occurred_at"):
        data["occurred_at"] = datetime.fromisoformat(data["occurred_at"])
    # Fields unknown here are dropped (forward compatible: see row_from_fields).
    return row_from_fields(data)


@contextlib.contextmanager
def _locked(path: Path, mode: str) -> Iterator[IO[str]]:
    with open(path, mode) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield handle
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class Spool:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.live = directory / f"{LIVE_PREFIX}{socket.gethostname()}-{os.getpid()}.jsonl"

    def append(self, rows: list[FailureRow]) -> None:
        """Append ``rows`` durably (fsync'd before returning). Blocking: call in a thread."""
        self.directory.mkdir(parents=True, exist_ok=True)
        text = "".join(encode(row) + "\n" for row in rows)
        while True:
            with _locked(self.live, "a") as handle:
                # Renamed by a replayer between our open and our lock: write again.
                if (
                    not self.live.exists()
                    or os.stat(self.live).st_ino != os.fstat(handle.fileno()).st_ino
                ):
                    continue
                handle.write(text)
                handle.flush()
                os.fsync(handle.fileno())
                return

    def pending(self) -> list[Path]:
        if not self.directory.is_dir():
            return []
        return sorted(
            p
            for p in self.directory.iterdir()
            if p.is_file() and p.name.startswith((LIVE_PREFIX, TAKEN_PREFIX))
        )

    def count(self) -> int:
        total = 0
        for path in self.pending():
            with contextlib.suppress(FileNotFoundError), open(path) as handle:
                total += sum(1 for line in handle if line.strip())
        return total

    def _take(self, path: Path) -> Path | None:
        if path.name.startswith(TAKEN_PREFIX):
            return path  # left by a replayer that stopped half-way
        taken = self.directory / f"{TAKEN_PREFIX}{uuid.uuid4().hex}.jsonl"
        try:
            os.rename(path, taken)
        except FileNotFoundError:
            return None  # another replayer took it
        return taken

    def _bury(self, lines: list[str]) -> None:
        dead = self.directory / "dead"
        dead.mkdir(exist_ok=True)
        with _locked(dead / "failures.jsonl", "a") as handle:
            handle.write("".join(line + "\n" for line in lines))
            handle.flush()
            os.fsync(handle.fileno())

    async def replay(self, record: Callable[[FailureRow], Awaitable[Any]]) -> ReplayResult:
        """Feed every spooled row to ``record``; keep what fails, bury poison."""
        replayed = dead = remaining = 0
        for path in self.pending():
            taken = self._take(path)
            if taken is None:
                continue
            try:
                # Held for the whole file: a writer mid-append finishes first, and a
                # second replayer waits, then finds the file gone and skips it.
                with _locked(taken, "r") as handle:
                    if (
                        not taken.exists()
                        or os.stat(taken).st_ino != os.fstat(handle.fileno()).st_ino
                    ):
                        continue
                    lines = [line.strip() for line in handle if line.strip()]
                    result = await self._replay_lines(lines, record)
                    taken.unlink(missing_ok=True)
            except FileNotFoundError:
                continue
            replayed += result.replayed
            dead += result.dead
            remaining += result.remaining
            if result.remaining:
                break  # the database is failing: try again on the next pass
        return ReplayResult(replayed=replayed, remaining=remaining, dead=dead)

    async def _replay_lines(
        self, lines: list[str], record: Callable[[FailureRow], Awaitable[Any]]
    ) -> ReplayResult:
        replayed = 0
        buried: list[str] = []
        keep: list[str] = []
        for index, line in enumerate(lines):
            try:
                await record(decode(line))
                replayed += 1
            except (PoisonRecord, ValueError, TypeError) as exc:
                logger.error(
                    "spooled failure refused, moved to spool/dead: %s",
                    exc,
                    extra={"action": "failure_spool_dead"},
                )
                buried.append(line)
            except Exception as exc:
                logger.warning(
                    "failure spool replay paused: %s", exc, extra={"action": "failure_spool_paused"}
                )
                keep = lines[index:]
                break
        if buried:
            self._bury(buried)
        if keep:
            self.append([decode(line) for line in keep])
        return ReplayResult(replayed=replayed, remaining=len(keep), dead=len(buried))
