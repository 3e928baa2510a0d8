"""Process identity: one id per worker process, never reused after a restart.

``host:pid:start-time:random``: the pid alone repeats after a reboot or in another
container, the start time alone repeats across hosts; the random part makes two
processes started in the same second on the same host (pid reuse) distinct too.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class ProcessIdentity:
    hostname: str
    pid: int
    started_at: datetime
    nonce: str = field(default_factory=lambda: secrets.token_hex(3))

    @classmethod
    def current(cls) -> ProcessIdentity:
        return cls(hostname=socket.gethostname(), pid=os.getpid(), started_at=datetime.now(UTC))

    @property
    def id(self) -> str:
        return f"{self.hostname}:{self.pid}:{self.started_at:%Y%m%dT%H%M%SZ}:{self.nonce}"
