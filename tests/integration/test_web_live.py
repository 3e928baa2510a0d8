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
    server: str, db_url: str, settings: Settings, cli
) -> None:  # type: ignore[no-untyped-def]
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
