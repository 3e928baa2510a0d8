"""sd_notify on real AF_UNIX datagram sockets (filesystem and abstract)."""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobsys.lanes.lifecycle import Snapshot
from jobsys.lanes.sdnotify import Notifier, SdNotifyHook


@pytest.fixture
def fs_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(2)
    yield sock, path
    sock.close()


def received(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``."""
    out = []
    sock.settimeout(0.2)
    try:
        while True:
            out.append(sock.recv(4096).decode())
    except TimeoutError:
        return out


def test_messages_on_a_filesystem_socket(fs_socket: tuple[socket.socket, str]) -> None:
    sock, path = fs_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    assert notifier.enabled
    assert notifier.ready("lanes base: 0 running")
    assert notifier.status("lanes base: 3 running\n2 waiting")
    assert notifier.watchdog()
    assert notifier.extend_timeout(1.5)
    assert notifier.stopping("draining 3 jobs")
    assert received(sock) == [
        "READY=1\nSTATUS=lanes base: 0 running",
        "STATUS=lanes base: 3 running 2 waiting",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=1500000",
        "STOPPING=1\nSTATUS=draining 3 jobs",
    ]


def test_messages_on_an_abstract_socket() -> None:
    name = f"jobsys-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        notifier = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert notifier.ready()
        assert received(sock) == ["READY=1"]


def test_no_socket_is_a_no_op() -> None:
    notifier = Notifier({})
    assert not notifier.enabled
    assert notifier.ready("x") is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval() is None


def test_a_dead_socket_never_raises_and_warns_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody-listens.sock")})
    with caplog.at_level(logging.WARNING, logger="jobsys.sdnotify"):
        assert notifier.ready() is False
        assert notifier.status("still running") is False
    assert [r.action for r in caplog.records] == ["sd_notify_failed"]  # type: ignore[attr-defined]


def test_a_full_socket_does_not_block(fs_socket: tuple[socket.socket, str]) -> None:
    _, path = fs_socket
    notifier = Notifier({"NOTIFY_SOCKET": path})
    results = [notifier.status("x" * 150) for _ in range(5000)]  # nobody reads
    assert results[0] is True
    assert results[-1] is False  # dropped, not blocked


def test_watchdog_interval_applies_to_its_pid_only() -> None:
    mine = {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "4000000", "WATCHDOG_PID": str(os.getpid())}
    assert Notifier(mine).watchdog_interval() == 4.0
    assert Notifier({**mine, "WATCHDOG_PID": ""}).watchdog_interval() == 4.0
    assert Notifier({**mine, "WATCHDOG_PID": "1"}).watchdog_interval() is None
    assert Notifier({**mine, "WATCHDOG_USEC": "garbage"}).watchdog_interval() is None
    assert Notifier({**mine, "WATCHDOG_USEC": "0"}).watchdog_interval() is None


def snapshot(running: int) -> Snapshot:
    return Snapshot(process_id="p", lanes=("base",), state="running", running={"base": running})


def test_hook_sends_ready_changed_status_throttled_watchdog_and_stopping(
    fs_socket: tuple[socket.socket, str],
) -> None:
    sock, path = fs_socket
    notifier = Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "200000"})
    now = [0.0]
    hook = SdNotifyHook(notifier, clock=lambda: now[0])
    hook.ready(snapshot(0))
    hook.status(snapshot(0))  # unchanged: not sent again
    hook.status(snapshot(2))
    for step in range(10):  # every 0.05 s for 0.5 s; pings are due every 0.1 s
        now[0] = step * 0.05
        hook.watchdog()
    hook.stopping(snapshot(0))
    messages = received(sock)
    assert messages[0] == f"READY=1\nSTATUS={snapshot(0).status_line()}"
    assert [m for m in messages if m.startswith("STATUS=")] == [
        f"STATUS={snapshot(2).status_line()}"
    ]
    assert messages.count("WATCHDOG=1") == 5
    assert messages[-1] == f"STOPPING=1\nSTATUS={snapshot(0).status_line()}"


def test_hook_without_watchdog_never_pings(fs_socket: tuple[socket.socket, str]) -> None:
    sock, path = fs_socket
    hook = SdNotifyHook(Notifier({"NOTIFY_SOCKET": path}))
    hook.watchdog()
    hook.watchdog()
    assert received(sock) == []


def test_module_functions_read_notify_socket_from_the_environment(
    fs_socket: tuple[socket.socket, str],
) -> None:
    sock, path = fs_socket
    code = "from jobsys.lanes import sdnotify; sdnotify.ready('up'); sdnotify.stopping()"
    subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, "NOTIFY_SOCKET": path}, check=True
    )
    assert received(sock) == ["READY=1\nSTATUS=up", "STOPPING=1"]
