"""A client of systemd's sd_notify protocol, without a dependency.

The protocol: newline-separated ``KEY=VALUE`` fields in one datagram sent to the
AF_UNIX socket named by ``$NOTIFY_SOCKET`` (a path, or ``@name`` for an abstract
socket). jobsys sends ``READY=1`` once connected and listening, ``STATUS=...`` with
lane and job counts, ``WATCHDOG=1`` while healthy (when the unit sets
``WatchdogSec=``) and ``STOPPING=1`` on shutdown; ``EXTEND_TIMEOUT_USEC=`` keeps a
long drain from being killed early.

Without ``NOTIFY_SOCKET`` every call is a no-op. A send never raises and never
blocks the event loop (non-blocking socket): a lost notification must not stop a
worker. :class:`SdNotifyHook` is the worker runtime's lifecycle hook: it pings the watchdog
from inside the worker's event loop, so a stuck loop stops the pings and systemd
restarts the process.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobsys.lanes.lifecycle import Snapshot

logger = logging.getLogger("jobsys.sdnotify")

#: STATUS= is shown by ``systemctl status``; longer texts are cut.
MAX_STATUS_CHARS = 200
#: Ping the watchdog this often, as a fraction of ``WatchdogSec`` (systemd advises 1/2).
WATCHDOG_PING_FRACTION = 0.5


def _address(value: str) -> str | None:
    if value.startswith("@"):
        return "\0" + value[1:]  # abstract namespace
    if value.startswith("/"):
        return value
    return None  # vsock and other schemes are not used by jobsys


class Notifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET`` of ``env`` (default: the process's)."""

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.address = _address(env.get("NOTIFY_SOCKET", ""))
        self._watchdog_usec = env.get("WATCHDOG_USEC", "")
        self._watchdog_pid = env.get("WATCHDOG_PID", "")
        self._socket: socket.socket | None = None
        self._warned = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def watchdog_interval(self) -> float | None:
        """``WatchdogSec`` in seconds when it applies to this process, else None."""
        if self._watchdog_pid and self._watchdog_pid != str(os.getpid()):
            return None
        try:
            usec = int(self._watchdog_usec)
        except ValueError:
            return None
        return usec / 1_000_000 if usec > 0 else None

    def send(self, *fields: str) -> bool:
        """Send ``KEY=VALUE`` fields in one datagram; True when it was sent."""
        if self.address is None or not fields:
            return False
        message = "\n".join(fields).encode("utf-8", "replace")
        try:
            if self._socket is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                sock.setblocking(False)
                self._socket = sock
            self._socket.sendto(message, self.address)
            return True
        except OSError as exc:
            if not self._warned:  # once: systemd gone means every send fails
                self._warned = True
                logger.warning(
                    "cannot notify systemd on %s: %s",
                    self.address.replace("\0", "@"),
                    exc,
                    extra={"action": "sd_notify_failed"},
                )
            return False

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *self._status_fields(status))

    def status(self, text: str) -> bool:
        return self.send(*self._status_fields(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *self._status_fields(status))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before a start or stop timeout kills the unit."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1_000_000))}")

    @staticmethod
    def _status_fields(text: str | None) -> tuple[str, ...]:
        if text is None:
            return ()
        # A newline would start a new field: one line only.
        flat = " ".join(text.split())[:MAX_STATUS_CHARS]
        return (f"STATUS={flat}",)

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None


@functools.cache
def default() -> Notifier:
    """The process's notifier (reads the environment once)."""
    return Notifier()


def ready(status: str | None = None) -> bool:
    return default().ready(status)


def status(text: str) -> bool:
    return default().status(text)


def watchdog() -> bool:
    return default().watchdog()


def stopping(status: str | None = None) -> bool:
    return default().stopping(status)


def watchdog_interval() -> float | None:
    return default().watchdog_interval()


class SdNotifyHook:
    """The worker's :class:`~jobsys.lanes.lifecycle.LifecycleHook` for systemd.

    READY=1 when every lane is up, STATUS= when the job counts change, WATCHDOG=1 at
    most every ``WatchdogSec`` times ``WATCHDOG_PING_FRACTION`` (the runtime calls
    ``watchdog`` from its event loop, so a stuck loop stops the pings and systemd
    restarts the process), STOPPING=1 on shutdown. Does nothing without
    ``NOTIFY_SOCKET``.
    """

    def __init__(
        self, notifier: Notifier | None = None, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.notifier = notifier or default()
        self._clock = clock
        self._last_status: str | None = None
        self._last_ping: float | None = None

    def ready(self, snapshot: Snapshot) -> None:
        self._last_status = snapshot.status_line()
        self.notifier.ready(self._last_status)

    def status(self, snapshot: Snapshot) -> None:
        text = snapshot.status_line()
        if text != self._last_status:
            self.notifier.status(text)
            self._last_status = text

    def watchdog(self) -> None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return
        now = self._clock()
        if self._last_ping is None or now - self._last_ping >= interval * WATCHDOG_PING_FRACTION:
            self.notifier.watchdog()
            self._last_ping = now

    def stopping(self, snapshot: Snapshot) -> None:
        self.notifier.stopping(snapshot.status_line())
