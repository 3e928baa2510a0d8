"""Pure parts of the web console: coalesced SSE, bind checks, filter field names,
safe redirects, formatting."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

import pytest

from jobsys.errors import UsageError
from jobsys.web import format as fmt
from jobsys.web.app import _safe_next
from jobsys.web.auth import Credentials, check_bind, is_loopback
from jobsys.web.live import LiveHub
from jobsys.web.pages import field_of


async def test_one_read_reaches_each_browser_as_one_message_each_topic_once() -> None:
    hub = LiveHub("postgresql://unused")
    queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(1000) for _ in range(3)]
    hub._clients.update(queues)
    for n in range(100):
        hub._coalesce("jobs_changed", {"succeeded": 1, "id": n})
    hub._coalesce("issues_changed", {"issue_id": 7})
    assert all(q.empty() for q in queues)  # nothing before the read is drained
    hub._send_pending()  # what the subscriber's Drained triggers
    messages = [q.get_nowait() for q in queues]
    assert all(q.empty() for q in queues)
    assert messages[0] is messages[1] is messages[2]  # serialised once for everyone
    raw = messages[0]
    assert raw is not None
    by_topic = {}
    for block in raw.decode().strip().split("\n\n"):
        event, data = block.split("\n")
        by_topic[event.removeprefix("event: ")] = json.loads(data.removeprefix("data: "))
    assert by_topic["jobs_changed"]["succeeded"] == 100
    assert by_topic["jobs_changed"]["events"] == 100
    assert by_topic["jobs_changed"]["ids"][-1] == 99
    assert by_topic["issues_changed"]["issue_ids"] == [7]
    hub._send_pending()
    assert all(q.empty() for q in queues)  # nothing pending, nothing sent
    await hub.stop()


async def test_a_slow_browser_gets_one_resync_instead_of_a_backlog() -> None:
    hub = LiveHub("postgresql://unused")
    queue: asyncio.Queue[bytes | None] = asyncio.Queue(2)
    hub._clients.add(queue)
    for n in range(5):
        hub.broadcast(f"event: jobs_changed\ndata: {n}\n\n".encode())
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    assert any(item is not None and b"event: resync" in item for item in items)
    assert len(items) <= 2


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("10.0.0.5", False), ("example.com", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_only_loopback_without_credentials() -> None:
    check_bind("127.0.0.1", Credentials())
    with pytest.raises(UsageError, match=r"refusing to serve the web console on 0\.0\.0\.0"):
        check_bind("0.0.0.0", Credentials())


@pytest.mark.parametrize(
    ("message", "field"),
    [("--kind 'x' is not a failure kind.", "kind"), ("--since: bad", "since"),
     ("--limit: 0 is out of range.", "limit"), ("no failure matches", None)],
)  # fmt: skip
def test_the_filter_a_message_names(message: str, field: str | None) -> None:
    assert field_of(UsageError(message)) == field


@pytest.mark.parametrize(
    ("value", "safe"),
    [("/admin/jobs?status=todo", "/admin/jobs?status=todo"), ("//evil.example", None),
     ("/\\evil.example", None), ("https://evil.example", None), (None, None)],
)  # fmt: skip
def test_login_redirects_stay_on_the_console(value: str | None, safe: str | None) -> None:
    assert _safe_next(value) == (safe or "/admin/background_jobs")


def test_formatting() -> None:
    assert fmt.when(datetime(2026, 12, 5, 21, 40, 3, tzinfo=UTC)) == "2026-12-05 21:40:03Z"
    assert fmt.when(None) == "-"
    # A retry state's times are ISO strings from JSON: the failure page showed them raw,
    # '2026-12-06T15:03:49.888629Z' and '2026-12-06T15:04:00.06299+00:00' side by side.
    assert fmt.when("2026-12-06T15:03:49.888629Z") == "2026-12-06 15:03:49Z"
    assert fmt.when("2026-12-06T16:04:00.06299+01:00") == "2026-12-06 15:04:00Z"
    assert fmt.when("not a time") == "not a time"
    assert fmt.seconds(0.25) == "250 ms"
    assert fmt.seconds(245) == "4m05s"
    assert fmt.seconds(None) == "-"


def test_the_web_package_has_no_sql_and_no_procrastinate() -> None:
    """An edge like cli/: it calls the domains' service functions; SQL stays in their
    store modules and Procrastinate behind jobsys.engine."""
    import re
    from pathlib import Path

    import jobsys.web

    sql = re.compile(r"\b(SELECT|INSERT INTO|UPDATE \w+ SET|DELETE FROM)\b")
    for path in Path(jobsys.web.__file__).parent.glob("*.py"):
        text = path.read_text()
        assert not sql.search(text), path
        assert not re.search(r"^\s*(from|import) procrastinate", text, re.MULTILINE), path
        assert not re.search(r"^\s*(from|import) jobsys\.cli", text, re.MULTILINE), path
