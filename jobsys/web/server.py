"""Serving the console with uvicorn: in the foreground (``jobsys web``) or in a thread
beside another command (``jobsys demo run --web``).

The listening socket is bound here, before uvicorn starts, so a port in use is one
readable error (exit 2) and port 0 gets a free port whose URL can be printed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobsys.errors import UsageError
from jobsys.settings import Settings
from jobsys.web.auth import check_bind, load_credentials

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
GRACEFUL_SHUTDOWN_SECONDS = 3  # open SSE streams are cut after this
START_TIMEOUT_SECONDS = 10.0

logger = logging.getLogger(__name__)


@dataclass
class Serving:
    url: str
    server: Any  # uvicorn.Server
    thread: threading.Thread
    sock: socket.socket

    def stop(self, timeout: float = 10.0) -> None:
        self.server.should_exit = True
        self.thread.join(timeout)
        self.sock.close()


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}.",
            hint="Choose another with --port (0 picks a free one), or stop what uses it.",
        ) from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def env_flag(name: str) -> bool:
    """A yes/no setting from the environment (1/true/yes/on), e.g. JOBSYS_WEB_TRUST_PROXY."""
    value = os.environ.get(name, "").strip().lower()
    if value in ("", "0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise UsageError(f"{name}={value!r}: expected 1/true/yes/on or 0/false/no/off.")


def prepare(
    settings: Settings,
    host: str,
    port: int,
    users_file: Path | None = None,
    *,
    secure_cookies: bool = False,
    trust_proxy: bool = False,
) -> tuple[Any, socket.socket, str]:
    """Check the bind against the credentials, resolve the database, build the app and
    bind the socket: everything that can fail, with a readable message. Returns the
    app, the socket and the dashboard's URL."""
    from jobsys.config.application import load_config
    from jobsys.db.connect import resolve
    from jobsys.web.app import create_app

    credentials = load_credentials(users_file=users_file)
    check_bind(host, credentials)
    url = resolve(settings, load_config(settings, with_tasks=False)).url
    app = create_app(
        settings,
        credentials,
        database_url=url,
        secret_key=os.environ.get("JOBSYS_WEB_SECRET") or None,
        secure_cookies=secure_cookies or env_flag("JOBSYS_WEB_SECURE_COOKIES"),
        trust_proxy=trust_proxy or env_flag("JOBSYS_WEB_TRUST_PROXY"),
    )
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    return app, sock, f"http://{shown}:{sock.getsockname()[1]}/admin/background_jobs"


def _server(app: Any, log_level: str = "info") -> Any:
    import uvicorn

    config = uvicorn.Config(
        app,
        log_level=log_level,
        server_header=False,
        proxy_headers=False,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return uvicorn.Server(config)


def run_foreground(app: Any, sock: socket.socket) -> None:
    """Serve until Ctrl-C (uvicorn handles the signals)."""
    _server(app).run(sockets=[sock])


def run_in_thread(app: Any, sock: socket.socket, *, log_level: str = "warning") -> Serving:
    """Serve in a daemon thread (its own event loop) beside the caller's work; returns
    once the server accepts connections. ``stop()`` ends it."""
    server = _server(app, log_level)
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="jobsys-web", daemon=True
    )
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        time.sleep(0.02)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    return Serving(f"http://{shown}:{port}", server, thread, sock)
