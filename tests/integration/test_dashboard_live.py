"""The interactive dashboard follows the database's events: a deferral or a failure
shows in its pane within a fraction of a second, not at the next poll (made an hour
here, so only an event can explain the change). Driven in-process with Textual's
pilot (no terminal: the same whatever ``TERM`` the suite runs under)."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import pytest
from textual.widgets import DataTable
from waiting import wait_until_async

from jobsys.cli import _tui
from jobsys.config.application import load_config
from jobsys.db.connect import connect
from jobsys.failures.store import FailureRow
from jobsys.lanes.execution import build_engine_app
from jobsys.live import coalesce
from jobsys.settings import Settings

ROUNDS = 5
#: The issue's bar is 200 ms from event to screen; a shared, loaded test machine gets
#: slack, but the hour-long poll keeps the test honest (only an event refreshes).
WITHIN_SECONDS = 2.0


@pytest.fixture(autouse=True)
def _fresh_coalescer(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coalesce, "_SHARED", None)


async def until(check: Callable[[], bool], timeout: float, what: str) -> float:
    """Seconds until ``check()`` holds (polled every 5 ms)."""
    start = time.monotonic()
    await wait_until_async(check, timeout, what, interval=0.005)
    return time.monotonic() - start


def ids(app: _tui.DashboardApp, pane: str) -> set[int]:
    return {row["id"] for row in app.data.get(pane, [])}


def on_screen(app: _tui.DashboardApp, pane: str, key: int) -> bool:
    table = app.query_one(f"#table-{pane}", DataTable)
    return any(row.value == str(key) for row in table.rows)


#: A runtime failure of a ``tests.live.work`` job (its job id added per failure).
FAILED = {
    "task": "tests.live.work", "queue": "default", "lane": "base", "attempt": 1,
    "error_class": "builtins.ValueError", "message": "bad input", "kind": "runtime",
    "retryable": True, "account_id": "acct7",
}  # fmt: skip


async def record(url: str, settings: Settings, job_id: int) -> int:
    """A failure recorded the way a worker does it (its issue counted, published)."""
    from jobsys.failures.recorder import record_failure

    config = load_config(settings, with_tasks=False)
    async with connect(url) as conn:
        await record_failure(conn, FailureRow(job_id=job_id, **FAILED), config)
        cursor = await conn.execute(
            "SELECT id FROM jobsys_failures WHERE job_id = %s ORDER BY id DESC LIMIT 1", (job_id,)
        )
        row: Any = await cursor.fetchone()
    return int(row["id"])


async def test_a_deferral_and_a_failure_show_without_waiting_for_the_poll(
    db_url: str, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_tui, "POLL_SECONDS", 3600.0)
    app = _tui.DashboardApp(settings)
    engine = build_engine_app(db_url)
    deferrals: list[float] = []
    failures: list[float] = []
    async with app.run_test(size=(120, 40)), engine.open_async():
        # the first read, then the follower's own (LISTEN is active: Synced)
        await until(lambda: app.reloads >= 2, 30, "the dashboard's first reads")
        deferrer = engine.configure_task("tests.live.work", queue="default")
        for n in range(ROUNDS):
            job = await deferrer.defer_async(account_id=n)
            waited = await until(lambda j=job: on_screen(app, "jobs", j), 10, f"job {job}")
            deferrals.append(waited)
            failure = await record(db_url, settings, job)
            waited = await until(
                lambda f=failure: on_screen(app, "failures", f), 10, f"failure {failure}"
            )
            failures.append(waited)
    print(
        f"event -> pane: deferral median {statistics.median(deferrals) * 1000:.0f} ms "
        f"max {max(deferrals) * 1000:.0f} ms; failure median "
        f"{statistics.median(failures) * 1000:.0f} ms max {max(failures) * 1000:.0f} ms"
    )
    assert statistics.median(deferrals) < WITHIN_SECONDS, deferrals
    assert statistics.median(failures) < WITHIN_SECONDS, failures
