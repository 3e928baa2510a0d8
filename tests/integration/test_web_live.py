"""The web console's live stream against a real database and a real server: one LISTEN
per process however many browsers, events without args, a dropped database reported
and recovered."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import failures_support as fx
import httpx2
import pytest
import web_support as ws
from failures_support import spool_home  # noqa: F401  (fixture)

from jobsys.settings import Settings

BROWSERS = 5


@dataclass
class Stream:
    """One SSE client in a thread: every (event, data) received, in order."""

    url: str
    events: list[tuple[str, dict]] = field(default_factory=list)
    raw: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    closed: str | None = None

    def run(self) -> None:
        try:
            self._read()
        except httpx2.HTTPError as exc:  # the server stopped at the end of the test
            self.closed = repr(exc)

    def _read(self) -> None:
        with httpx2.Client(timeout=30) as client, client.stream("GET", self.url) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            event = "message"
            for line in response.iter_lines():
                self.raw.append(line)
                if self.stop.is_set():
                    return
                if line.startswith("event: "):
                    event = line[7:]
                elif line.startswith("data: "):
                    self.events.append((event, json.loads(line[6:])))

    def wait_for(self, predicate, timeout: float = 10.0) -> tuple[str, dict]:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < deadline:
            for item in self.events[seen:]:
                if predicate(*item):
                    return item
            time.sleep(0.02)
        raise AssertionError(f"no matching event within {timeout}s; got {self.events}")


@pytest.fixture
def server(settings: Settings, db_url: str) -> Iterator[str]:
    with ws.serve(settings, db_url) as url:
        yield url


def open_streams(url: str, n: int) -> list[Stream]:
    streams = [Stream(f"{url}/admin/events") for _ in range(n)]
    for stream in streams:
        threading.Thread(target=stream.run, daemon=True).start()
    return streams


def listeners(db_url: str) -> int:
    (row,) = fx.rows(
        db_url,
        "SELECT count(*) AS n FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'jobsys-subscriber'",
    )
    return int(row["n"])


def connected(event: str, data: dict) -> bool:
    return event == "status" and data["connected"] is True


@pytest.mark.usefixtures("spool_home")
def test_many_browsers_share_one_listen_and_see_a_cli_deferral(
    server: str,
    db_url: str,
    settings: Settings,
    cli,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # type: ignore[no-untyped-def]
    import logging

    caplog.set_level(logging.DEBUG)
    # The seed's in-process worker also runs the deferred demo.refresh_profile, whose
    # jobsys.publish (no connection, no jobsys worker's flusher) resolves the
    # environment's database: without the URL it started an embedded server under the
    # cli fixture's JOBSYS_HOME and left it running (conftest's _no_embedded_server_left).
    monkeypatch.setenv("JOBSYS_DATABASE_URL", db_url)
    streams = open_streams(server, BROWSERS)
    for stream in streams:
        stream.wait_for(connected)
    assert listeners(db_url) == 1
    result = cli(
        "--database-url",
        db_url,
        "defer",
        "demo.refresh_profile",
        "--args",
        json.dumps({"account_id": 3}),
    )
    assert result.exit_code == 0, result.stderr
    job_id = int(result.stdout)
    for stream in streams:
        stream.wait_for(lambda e, d: e == "jobs_changed" and job_id in d.get("ids", []))
    assert listeners(db_url) == 1
    ws.seed(settings, db_url)  # real failures, one with the canary in its args
    for stream in streams:
        stream.wait_for(lambda e, d: e == "job_failures_changed")
        assert ws.CANARY not in "\n".join(stream.raw)
        stream.stop.set()
    # The log of everything above: the console serving the streams, the worker that
    # ran (and failed) the canary's jobs, the subscriber.
    assert caplog.records and ws.CANARY not in caplog.text


def test_a_dropped_database_connection_is_reported_then_recovered(server: str, db_url: str) -> None:
    (stream,) = open_streams(server, 1)
    stream.wait_for(connected)
    fx.rows(
        db_url,
        "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity "
        "WHERE datname = current_database() AND application_name = 'jobsys-subscriber'",
    )
    lost = stream.wait_for(lambda e, d: e == "status" and d["connected"] is False)
    assert lost[1]["error"]
    index = stream.events.index(lost)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not any(
        connected(*item) for item in stream.events[index + 1 :]
    ):
        time.sleep(0.05)
    assert any(connected(*item) for item in stream.events[index + 1 :]), stream.events
    assert listeners(db_url) == 1
    stream.stop.set()


def test_the_stream_needs_a_login_when_logins_are_configured(
    settings: Settings, db_url: str
) -> None:
    from jobsys.web.auth import load_credentials

    creds = load_credentials({"JOBSYS_WEB_READONLY_TOKEN": "readonly-token-0123456789abcdef"})
    with ws.serve(settings, db_url, creds) as url, httpx2.Client(timeout=10) as client:
        assert client.get(f"{url}/admin/events").status_code == 401
        with client.stream(
            "GET",
            f"{url}/admin/events",
            headers={"authorization": "Bearer readonly-token-0123456789abcdef"},
        ) as response:
            assert response.status_code == 200
            first = next(line for line in response.iter_lines() if line.startswith("event:"))
            assert first == "event: status"


def test_a_database_that_goes_away_shows_in_pages_and_stream_and_recovers(
    throwaway_server, tmp_path
) -> None:  # type: ignore[no-untyped-def]
    from jobsys.db import embedded, migrate

    home, url = throwaway_server
    migrate.upgrade(url)
    settings = Settings(
        database_url=url, home=tmp_path / "home", config_dir=fx.CONFIG_DIR, operator="tester"
    )
    with ws.serve(settings, url) as base, httpx2.Client(timeout=30) as client:
        (stream,) = open_streams(base, 1)
        stream.wait_for(connected)
        assert client.get(f"{base}/admin/background_jobs").status_code == 200

        embedded.stop(home)
        stream.wait_for(lambda e, d: e == "status" and d["connected"] is False, 15)
        down = client.get(f"{base}/admin/background_jobs")
        assert down.status_code == 503
        assert "Database unreachable" in down.text and "Traceback" not in down.text
        lost_at = len(stream.events)

        assert embedded.start(home).running
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            connected(*item) for item in stream.events[lost_at:]
        ):
            time.sleep(0.1)
        assert any(connected(*item) for item in stream.events[lost_at:]), stream.events
        assert client.get(f"{base}/admin/background_jobs").status_code == 200
        stream.stop.set()


@pytest.mark.slow
def test_demo_run_serves_the_console_beside_it_and_prints_its_url(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`make run` is `jobsys demo run --web 127.0.0.1:8080`: the real binary, port 0 here."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    env = {
        **os.environ,
        "JOBSYS_DATABASE_URL": db_url,
        "JOBSYS_CONFIG_DIR": str(fx.CONFIG_DIR),
        "JOBSYS_HOME": str(tmp_path / "home"),
    }
    jobsys = str(Path(sys.executable).with_name("jobsys"))
    proc = subprocess.Popen(
        [jobsys, "demo", "run", "--accounts", "5", "--web", "127.0.0.1:0"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = None
        lines = []
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            if line.startswith("Web console: "):
                url = line.split("Web console: ", 1)[1].strip()
        assert url is not None, "".join(lines)
        assert url.startswith("http://127.0.0.1:") and url.endswith("/admin/background_jobs")
        page = httpx2.get(url, timeout=30)
        assert page.status_code == 200 and "Lanes and queues" in page.text
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
