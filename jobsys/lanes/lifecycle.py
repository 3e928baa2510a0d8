"""Notification points of a worker process's life, for whoever wants them.

The sd_notify integration (``jobsys.lanes.sdnotify``) implements
:class:`LifecycleHook` to send READY=1, STATUS=..., WATCHDOG=1 and STOPPING=1; it is
plugged in through ``jobsys.app.lifecycle_hooks(config)``. A hook that raises is
logged and ignored: observers never take the worker down.

- ``ready``: every lane has registered and the LISTEN connection is up (or the
  runtime decided to rely on polling);
- ``status``: every heartbeat interval, with job counts;
- ``watchdog``: every ``WATCHDOG_TICK_SECONDS`` while the event loop is responsive;
- ``stopping``: a stop was requested (signal, drain finished, fatal error).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol

logger = logging.getLogger("jobsys.lanes.lifecycle")

WATCHDOG_TICK_SECONDS = 1.0


@dataclass(frozen=True)
class Snapshot:
    process_id: str
    lanes: tuple[str, ...]
    state: str  # starting | running | draining | stopped
    running: dict[str, int] = field(default_factory=dict)  # lane -> jobs running
    waiting: dict[str, int] | None = None  # lane -> jobs due and waiting (None: unknown)
    jobs_done: int = 0
    listening: bool = False

    def status_line(self) -> str:
        """One line for systemd's STATUS=: ``base: 3 running, 12 waiting; ...``."""
        parts = []
        for lane in self.lanes:
            text = f"{lane}: {self.running.get(lane, 0)} running"
            if self.waiting is not None:
                text += f", {self.waiting.get(lane, 0)} waiting"
            parts.append(text)
        tail = f"{self.jobs_done} done" + ("" if self.listening else ", polling only")
        return f"{self.state}; " + "; ".join(parts) + f"; {tail}"


class LifecycleHook(Protocol):
    def ready(self, snapshot: Snapshot) -> None: ...
    def status(self, snapshot: Snapshot) -> None: ...
    def watchdog(self) -> None: ...
    def stopping(self, snapshot: Snapshot) -> None: ...


def call(hooks: list[LifecycleHook], method: str, *args: object) -> None:
    for hook in hooks:
        try:
            getattr(hook, method)(*args)
        except Exception:
            logger.exception(
                f"lifecycle hook {type(hook).__name__}.{method} failed",
                extra={"action": "lifecycle_hook_failed"},
            )
