"""Queue and service health issues open on breach and resolve on recovery."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from typing import Any

import failures_support as fx
import pytest
from failures_support import spool_home  # noqa: F401  (fixture)

from jobsys.config.models import Health, QueueThresholds, ServiceCheck
from jobsys.db.connect import connect
from jobsys.failures.recorder import record_failure
from jobsys.failures.store import FailureRow
from jobsys.flow import store as flow_store
from jobsys.issues import health_store
from jobsys.issues.health import check_queues
from jobsys.issues.probes import check_services


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(type(self).status)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args: object) -> None:
        return None


class Server:
    """A real HTTP server on 127.0.0.1 that can go down and come back on the same port."""

    def __init__(self) -> None:
        self.httpd: http.server.HTTPServer | None = None
        self.port = 0
        self.up()

    def up(self) -> None:
        self.httpd = http.server.HTTPServer(("127.0.0.1", self.port), _Health)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def down(self) -> None:
        assert self.httpd is not None
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd = None


@pytest.fixture
def ai_server() -> Iterator[Server]:
    server = Server()
    yield server
    if server.httpd is not None:
        server.down()


def _service_config(port: int):  # type: ignore[no-untyped-def]
    check = ServiceCheck(url=f"http://user:pw@127.0.0.1:{port}/health", timeout_seconds=1)
    return fx.repo_config(health=Health(services={"ai": check}))


async def test_service_outage_opens_joins_failures_and_resolves(
    db_url: str, ai_server: Server
) -> None:
    config = _service_config(ai_server.port)
    async with connect(db_url) as conn:
        result = await check_services(conn, config)
        assert result["open"] == [] and result["services"]["ai"]["ok"] is True
        ai_server.down()
        result = await check_services(conn, config)
        (outage_id,) = result["open"]
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert (issue["kind"], issue["status"], issue["service"]) == (
            "service_outage",
            "open",
            "ai",
        )
        assert "pw" not in issue["title"] and "service ai is down" in issue["title"]
        assert (await check_services(conn, config))["open"] == [outage_id]  # still one issue
        for n in range(30):  # transient failures naming the service join the outage
            row = FailureRow(
                job_id=n + 1, task="fx.ai_call", queue="ai", attempt=1,
                error_class="jobsys.errors.TransientError", message=f"AI refused job {n}",
                kind="transient", retryable=True, service="ai", account_id=str(n % 4),
            )  # fmt: skip
            await record_failure(conn, row, config)
        issues = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert len(issues) == 1 and issues[0]["affected_accounts"] == 4
        assert fx.rows(db_url, "SELECT DISTINCT issue_id FROM jobsys_failures") == [
            {"issue_id": outage_id}
        ]
        ai_server.up()
        result = await check_services(conn, config)
        assert result["resolved"] == [outage_id]
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert (issue["status"], issue["resolved_by"]) == ("resolved", "auto")
        # The automatic retry (jobsys.retry.auto) now replays the outage's failures.
        from jobsys.retry import store as retry_store

        assert await retry_store.resolved_outages(conn) == [outage_id]
        # After recovery, failures of the service get their own issue again.
        row = FailureRow(
            job_id=99, task="fx.ai_call", queue="ai", attempt=1,
            error_class="jobsys.errors.TransientError", message="AI refused job 99",
            kind="transient", retryable=True, service="ai",
        )  # fmt: skip
        await record_failure(conn, row, config)
        assert len(fx.rows(db_url, "SELECT * FROM jobsys_issues")) == 2


async def test_an_outage_that_comes_back_does_not_say_it_recovered(
    db_url: str, ai_server: Server
) -> None:
    """The service down again reopened its outage issue with the last recovery's
    `recovered_at` still in its details: `issues show` read 'recovered_at: 17:42' under
    'service ai is down' (operator walk-through, story 4). A reopened outage drops it;
    the next recovery writes its own."""
    config = _service_config(ai_server.port)
    async with connect(db_url) as conn:
        ai_server.down()
        (outage_id,) = (await check_services(conn, config))["open"]
        ai_server.up()
        assert (await check_services(conn, config))["resolved"] == [outage_id]
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        first_recovery = issue["details"]["recovered_at"]
        ai_server.down()
        assert (await check_services(conn, config))["open"] == [outage_id]
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert (issue["status"], issue["regression"]) == ("open", True)
        assert "recovered_at" not in issue["details"], issue["details"]
        assert issue["details"]["signal"] == "down"
        ai_server.up()
        await check_services(conn, config)
        (issue,) = fx.rows(db_url, "SELECT * FROM jobsys_issues")
        assert issue["status"] == "resolved"
        assert issue["details"]["recovered_at"] > first_recovery


TIGHT = QueueThresholds(
    max_waiting=3, max_oldest_wait_seconds=60, max_failure_rate=0.5, min_finished_for_rate=4
)


async def test_queue_health_opens_per_signal_and_resolves(db_url: str) -> None:
    config = fx.repo_config(health=Health(queues=TIGHT))
    app = fx.build_app(db_url, config)
    async with app.open_async():
        await fx.defer(app, [("fx.ok", {"account_id": i}) for i in range(3)])
        await fx.defer(app, [("fx.runtime", {"account_id": i}) for i in range(5)])
        # No live worker for the base lane: work waits.
        async with connect(db_url) as conn:
            await conn.execute(
                "UPDATE procrastinate_events SET at = at - interval '5 minutes'"
                " WHERE type = 'deferred'"
            )
            result = await check_queues(conn, config)
        signals = {b["fingerprint"] for b in result["breaches"]}
        assert signals == {
            "queue_health:profiles:waiting",
            "queue_health:profiles:oldest_wait",
            "queue_health:lane:base:no_worker",
        }
        # A worker drains the queue; 5 of 8 attempts failed.
        await fx.run_worker(app, config, queues=["profiles"])
        async with connect(db_url) as conn:
            await conn.execute(
                "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes) "
                "VALUES ('h:1:0:x', 'h', 1, ARRAY['base'])"
            )
            result = await check_queues(conn, config)
            assert {b["fingerprint"] for b in result["breaches"]} == {
                "queue_health:profiles:failure_rate"
            }
            assert len(result["resolved"]) == 3
            await conn.execute("DELETE FROM procrastinate_events WHERE type = 'failed'")
            result = await check_queues(conn, config)
    assert result["breaches"] == [] and len(result["resolved"]) == 1
    issues = fx.rows(
        db_url, "SELECT kind, status, resolved_by FROM jobsys_issues WHERE kind = 'queue_health'"
    )
    assert issues == [{"kind": "queue_health", "status": "resolved", "resolved_by": "auto"}] * 4


async def test_a_paused_queue_alarms_on_failures_not_on_its_waiting_jobs(db_url: str) -> None:
    """An operator paused profiles at 3 a.m.: its jobs pile up on purpose. Its waiting
    and oldest_wait issues, and the base lane's no_worker counted from its jobs, are
    resolved (auto) by the pause; its failure rate still alarms. Resumed, the waiting
    jobs alarm again, as no regression, but their oldest wait counts from the resume.
    (Before: the paused queue's waiting jobs stayed breaches.)"""
    config = fx.repo_config(health=Health(queues=TIGHT))
    app = fx.build_app(db_url, config)
    async with app.open_async():
        await fx.defer(app, [("fx.runtime", {"account_id": i}) for i in range(5)])
        await fx.run_worker(app, config, queues=["profiles"])  # 5 of 5 attempts fail
        await fx.defer(app, [("fx.ok", {"account_id": i}) for i in range(5)])
    waiting = {
        "queue_health:profiles:waiting",
        "queue_health:profiles:oldest_wait",
        "queue_health:lane:base:no_worker",
    }
    rate = "queue_health:profiles:failure_rate"
    async with connect(db_url) as conn:
        await conn.execute(
            "UPDATE procrastinate_events SET at = at - interval '5 minutes' WHERE type = 'deferred'"
        )
        result = await check_queues(conn, config)
        assert {b["fingerprint"] for b in result["breaches"]} == waiting | {rate}
        opened = dict(zip(sorted(waiting | {rate}), result["open"], strict=True))

        async def pause(paused: bool) -> None:
            await flow_store.set_paused(
                conn, ["profiles"], paused=paused, actor="alice", target="profiles"
            )

        await pause(True)
        result = await check_queues(conn, config)
        assert {b["fingerprint"] for b in result["breaches"]} == {rate}
        assert sorted(result["resolved"]) == sorted(opened[f] for f in waiting)
        state = (
            "SELECT fingerprint, status, resolved_by, details->>'resolved_reason' AS reason,"
            " regression FROM jobsys_issues WHERE kind = 'queue_health'"
        )
        assert {r["fingerprint"]: tuple(r.values())[1:] for r in fx.rows(db_url, state)} == {
            **{f: ("resolved", "auto", "queue paused", False) for f in waiting},
            rate: ("open", None, None, False),
        }
        assert (await check_queues(conn, config))["resolved"] == []  # still paused: as is
        await pause(False)
        result = await check_queues(conn, config)
        again = waiting - {"queue_health:profiles:oldest_wait"}
        assert {b["fingerprint"] for b in result["breaches"]} == again | {rate}
    # The same problem back after a pause/resume cycle, not a regression (review
    # finding 7; before: regression = true).
    assert {r["fingerprint"]: tuple(r.values())[1:] for r in fx.rows(db_url, state)} == {
        **{f: ("open", None, None, False) for f in again},
        "queue_health:profiles:oldest_wait": ("resolved", "auto", "queue paused", False),
        rate: ("open", None, None, False),
    }


async def _backlog(db_url: str, config: Any) -> None:
    """Five jobs of profiles, ready 30 minutes ago; no worker serves the base lane."""
    app = fx.build_app(db_url, config)
    async with app.open_async():
        await fx.defer(app, [("fx.ok", {"account_id": i}) for i in range(5)])
    fx.rows(
        db_url,
        "UPDATE procrastinate_events SET at = at - interval '30 minutes'"
        " WHERE type = 'deferred' RETURNING id",
    )


async def _oldest_wait(conn: Any, config: Any) -> float | None:
    """Run the check; the oldest_wait breach's value, None when there is none."""
    result = await check_queues(conn, config)
    signals = {b["signal"]: b for b in result["breaches"]}
    # the backlog itself still breaches (unless the queue is paused)
    assert set(signals) - {"oldest_wait"} in ({"waiting", "no_worker"}, set())
    return signals["oldest_wait"]["value"] if "oldest_wait" in signals else None


async def test_a_resumed_queue_gets_its_threshold_to_drain_before_oldest_wait(
    db_url: str,
) -> None:
    """Jobs waited 30 minutes, mostly while profiles was paused (for an hour, resumed
    early by hand). The first check after the resume opens no oldest_wait issue: the
    queue is draining. The same backlog still waiting 90 s after the resume (threshold
    60 s) opens it, counted from the resume, not from the jobs' ready time nor from the
    pause's planned end. (Before: oldest_wait opened at once, at 1,800 s.)"""
    config = fx.repo_config(health=Health(queues=TIGHT))
    await _backlog(db_url, config)
    async with connect(db_url) as conn:
        await flow_store.set_paused(
            conn, ["profiles"], paused=True, actor="alice", target="profiles", for_seconds=3600
        )
        await conn.execute(
            "UPDATE jobsys_queue_pause_events SET created_at = now() - interval '25 minutes'"
        )
        assert await _oldest_wait(conn, config) is None  # paused: nothing about waiting
        await flow_store.set_paused(
            conn, ["profiles"], paused=False, actor="alice", target="profiles"
        )
        assert await _oldest_wait(conn, config) is None
        await conn.execute(
            "UPDATE jobsys_queue_pause_events SET created_at = created_at - interval '90 seconds'"
            " WHERE action = 'resume'"
        )
        wait = await _oldest_wait(conn, config)
    assert wait is not None and 90 <= wait < 150
    (issue,) = fx.rows(
        db_url, "SELECT title FROM jobsys_issues WHERE fingerprint LIKE '%%:oldest_wait'"
    )
    assert "since the queue's pause ended" in issue["title"]


async def test_a_pause_for_a_while_ends_at_its_until_even_if_resumed_later(
    db_url: str,
) -> None:
    """`queues pause profiles --for 20m` ran out 10 s ago: the queue is open since then,
    so no oldest_wait yet. A resume by hand afterwards does not restart the clock, and
    90 s after the pause ran out the backlog alarms, counted from its end."""
    config = fx.repo_config(health=Health(queues=TIGHT))
    await _backlog(db_url, config)
    ran_out = "UPDATE {} SET until = now() - interval '{} seconds'"
    async with connect(db_url) as conn:
        await flow_store.set_paused(
            conn, ["profiles"], paused=True, actor="alice", target="profiles", for_seconds=1200
        )
        for table in ("jobsys_queue_pauses", "jobsys_queue_pause_events"):
            await conn.execute(ran_out.format(table, 10))
        assert await health_store.paused_queues(conn) == set()
        assert await _oldest_wait(conn, config) is None
        await flow_store.set_paused(
            conn, ["profiles"], paused=False, actor="bob", target="profiles"
        )
        assert await _oldest_wait(conn, config) is None
        await conn.execute(ran_out.format("jobsys_queue_pause_events", 90))
        wait = await _oldest_wait(conn, config)
    assert wait is not None and 90 <= wait < 150


async def test_a_pause_between_the_health_reads_raises_no_false_oldest_wait(
    db_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """profiles was paused for 25 minutes and resumed 10 s ago: its 30-minute-old
    backlog has 10 s of oldest wait. An operator pauses it again while a check runs,
    just after the check read the paused queues. The check's reads are one snapshot, so
    it sees the queue open since 10 s (no oldest_wait). Before, the pause ends were read
    in a statement of their own, after the pause: profiles was in neither set, its
    wait not clamped, and oldest_wait opened at 1,800 s (review finding 6)."""
    config = fx.repo_config(health=Health(queues=TIGHT))
    await _backlog(db_url, config)
    read_paused = health_store.paused_queues

    async def paused_then_paused_again(conn: Any) -> set[str]:
        paused = await read_paused(conn)
        async with connect(db_url) as other:
            await flow_store.set_paused(
                other, ["profiles"], paused=True, actor="bob", target="profiles"
            )
        return paused

    async with connect(db_url) as conn:
        for paused in (True, False):
            await flow_store.set_paused(
                conn, ["profiles"], paused=paused, actor="alice", target="profiles"
            )
        await conn.execute(
            "UPDATE jobsys_queue_pause_events SET created_at = now() - CASE action"
            " WHEN 'pause' THEN interval '25 minutes' ELSE interval '10 seconds' END"
        )
        monkeypatch.setattr(health_store, "paused_queues", paused_then_paused_again)
        result = await check_queues(conn, config)
        assert not conn.info.transaction_status  # the snapshot's transaction ended (IDLE)
    signals = {b["signal"] for b in result["breaches"]}
    assert signals == {"waiting", "no_worker"}, result["breaches"]
    assert fx.rows(db_url, "SELECT queue FROM jobsys_queue_pauses") == [{"queue": "profiles"}]


async def test_quiet_job_failure_issues_resolve_themselves(db_url: str) -> None:
    config = fx.repo_config()
    async with connect(db_url) as conn:
        row = FailureRow(
            job_id=1, task="t", queue="profiles", attempt=1, error_class="builtins.KeyError",
            message="'k'", kind="runtime", retryable=True,
        )  # fmt: skip
        await record_failure(conn, row, config)
        assert (await check_queues(conn, config))["quiet_resolved"] == []
        await conn.execute("UPDATE jobsys_issues SET last_seen = now() - interval '2 hours'")
        assert len((await check_queues(conn, config))["quiet_resolved"]) == 1
