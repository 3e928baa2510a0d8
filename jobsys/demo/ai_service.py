"""DEMO ONLY: a simulated local AI service, so ``make run`` shows story 4 (an outage).

``jobsys demo run`` starts it inside its own process, on the host and port of
``health.services.ai.url`` (a stdlib ``ThreadingHTTPServer`` in a daemon thread: no
event loop, no dependency). It follows a fixed cycle: up for
``FIRST_OUTAGE_AFTER_SECONDS`` (3 minutes, so a new operator sees an outage soon),
then down for ``DOWN_SECONDS`` (2 minutes), up for ``UP_SECONDS`` (8 minutes), down
again, and so on. While up it answers 200 on the URL's path (404 elsewhere); while
down, 503 on every path.

The demo's AI tasks run in the same process (the worker of ``jobsys demo run``) and
read :func:`raise_if_down`: while the simulated service is down they fail with
``TransientError(service="ai")``, so the ``service_outage`` issue that
``jobsys.check_service_health`` opens collects them, and they are replayed once it
resolves. Without a simulator in this process (``jobsys worker``, tests that start
none) the tasks behave as before.

If the port is taken (a real AI service answers there), nothing is simulated:
:func:`start_for` returns why, and ``jobsys demo run`` says so on stderr.
"""

from __future__ import annotations

import errno
import http.server
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from jobsys import TransientError

if TYPE_CHECKING:
    from jobsys.config import Config

SERVICE = "ai"
#: The simulated service is up this long after start, then has its first outage.
FIRST_OUTAGE_AFTER_SECONDS = 180.0
#: Each outage lasts this long (long enough for the every-minute health check to see it).
DOWN_SECONDS = 120.0
#: Between two outages the service is up this long.
UP_SECONDS = 480.0


@dataclass(frozen=True)
class Cycle:
    """DEMO: the up/down pattern of the simulated service, in seconds since its start."""

    first_outage_after_seconds: float = FIRST_OUTAGE_AFTER_SECONDS
    down_seconds: float = DOWN_SECONDS
    up_seconds: float = UP_SECONDS

    def is_up(self, elapsed_seconds: float) -> bool:
        if elapsed_seconds < self.first_outage_after_seconds:
            return True
        phase = (elapsed_seconds - self.first_outage_after_seconds) % (
            self.down_seconds + self.up_seconds
        )
        return phase >= self.down_seconds

    def describe(self) -> str:
        every = (self.down_seconds + self.up_seconds) / 60
        return (
            f"first outage after {self.first_outage_after_seconds / 60:g} min, then down "
            f"{self.down_seconds / 60:g} min every {every:g} min"
        )


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        service = self.server.simulated
        if not service.is_up():
            status, body = 503, b"DEMO: simulated AI service outage\n"
        elif urllib.parse.urlsplit(self.path).path == service.path:
            status, body = 200, b"ok\n"
        else:
            status, body = 404, b"not found\n"
        self.send_response(status)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return None  # the health check polls every minute: no access log


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    simulated: SimulatedAiService


class SimulatedAiService:
    """DEMO: the HTTP server and the up/down state the demo's AI tasks read."""

    def __init__(
        self,
        host: str,
        port: int,
        path: str = "/health",
        cycle: Cycle | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path or "/"
        self.cycle = cycle or Cycle()
        self._clock = clock
        self._started_at = clock()
        self._httpd = _Server((host, port), _Handler)  # OSError when the port is taken
        self._httpd.simulated = self
        self.host, self.port = (
            str(self._httpd.server_address[0]),
            int(self._httpd.server_address[1]),
        )
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="demo-ai-service", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}{self.path}"

    def elapsed_seconds(self) -> float:
        return self._clock() - self._started_at

    def is_up(self) -> bool:
        return self.cycle.is_up(self.elapsed_seconds())

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)


_active: SimulatedAiService | None = None


def activate(service: SimulatedAiService | None) -> None:
    """Make ``service`` the one this process's demo AI tasks follow (``None``: none)."""
    global _active
    _active = service


def active() -> SimulatedAiService | None:
    return _active


def raise_if_down(what: str) -> None:
    """DEMO: raise ``TransientError(service="ai")`` while the simulated service is down."""
    service = _active
    if service is not None and not service.is_up():
        raise TransientError(
            f"AI service unavailable during {what} (HTTP 503 from {service.url})", service=SERVICE
        )


@dataclass(frozen=True)
class StartResult:
    service: SimulatedAiService | None
    message: str


def start_for(config: Config, cycle: Cycle | None = None) -> StartResult:
    """Start the simulated service on ``health.services.ai.url`` and activate it.

    Not started (``service`` is None, ``message`` says why) when no ``ai`` check is
    configured, the URL is not plain ``http`` on a local host, or the port is taken.
    """
    check = config.queues.health.services.get(SERVICE)
    if check is None:
        return StartResult(None, "DEMO: no health.services.ai check: AI outages not simulated.")
    parts = urllib.parse.urlsplit(check.url)
    host, where = parts.hostname or "", f"{parts.hostname}:{parts.port}"
    if parts.scheme != "http" or host not in ("127.0.0.1", "localhost", "::1"):
        return StartResult(
            None, "DEMO: health.services.ai is not a local http URL: AI outages not simulated."
        )
    try:
        service = SimulatedAiService(host, parts.port or 80, parts.path or "/", cycle)
    except OSError as exc:
        why = "the port is taken (a real AI service?)" if exc.errno == errno.EADDRINUSE else exc
        return StartResult(
            None, f"DEMO: not simulating the AI service on {where}: {why}; checking what answers."
        )
    activate(service)
    return StartResult(
        service,
        f"DEMO: simulated AI service on {where} ({service.cycle.describe()}); "
        "watch the service_outage issue open, collect the AI failures and resolve.",
    )


def stop_active() -> None:
    service = _active
    activate(None)
    if service is not None:
        service.stop()
