"""``jobsys jobs list/show/cancel`` and ``jobsys metrics`` against real jobs."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families
from waiting import wait_until_async

from jobsys.lanes.execution import build_engine_app

CANARY = "canary-5a1b-hunter2"


async def _defer(url: str, queue: str, task: str, **kwargs: Any) -> int:
    app = build_engine_app(url)
    async with app.open_async():
        return await app.configure_task(task, queue=queue).defer_async(**kwargs)


def defer(url: str, queue: str = "profiles", task: str = "demo.refresh_profile", **kw: Any) -> int:
    return asyncio.run(_defer(url, queue, task, **kw))


def set_status(url: str, job_id: int, status: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "UPDATE procrastinate_jobs SET status = %s::procrastinate_job_status, attempts = 1 "
            "WHERE id = %s",
            (status, job_id),
        )


@pytest.fixture
def jobs(db_url: str) -> dict[str, int]:
    ids = {
        "profile_7": defer(db_url, account_id=7, token=CANARY),
        "profile_8": defer(db_url, account_id="8"),
        "sync_7": defer(db_url, "sync", "demo.process_account", account_id=7),
        "face": defer(db_url, "ai_face_queue", "demo.refresh_profile", account_id=9),
    }
    set_status(db_url, ids["sync_7"], "succeeded")
    set_status(db_url, ids["face"], "doing")
    return ids


def test_list_json_contract_and_filters(cli, db_url: str, jobs: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    def ids(*args: str) -> list[int]:
        result = cli("--database-url", db_url, "jobs", "list", "--json", *args)
        assert result.exit_code == 0, result.stderr
        return [row["id"] for row in result.json()["items"]]

    result = cli("--database-url", db_url, "jobs", "list", "--json")
    rows = result.json()["items"]
    assert [r["id"] for r in rows] == sorted(jobs.values(), reverse=True)  # newest first
    first = next(r for r in rows if r["id"] == jobs["profile_7"])
    assert {
        "id",
        "task",
        "queue",
        "lane",
        "status",
        "attempts",
        "scheduled_at",
        "created_at",
        "args",
    } <= set(first)
    assert first["args"] == {"account_id": 7, "token": "[REDACTED]"}
    assert first["lane"] == "base" and first["status"] == "todo"
    assert first["created_at"].endswith("Z")
    assert CANARY not in result.stdout

    assert ids("--queue", "profiles") == sorted(
        [jobs["profile_7"], jobs["profile_8"]], reverse=True
    )
    assert ids("--lane", "ai_face_queue") == [jobs["face"]]
    assert ids("--status", "running") == [jobs["face"]]
    assert ids("--status", "succeeded", "--status", "doing") == sorted(
        [jobs["sync_7"], jobs["face"]], reverse=True
    )
    assert ids("--task", "demo.process_account") == [jobs["sync_7"]]
    assert ids("--account", "7") == sorted([jobs["profile_7"], jobs["sync_7"]], reverse=True)
    assert ids("--account", "8") == [jobs["profile_8"]]  # stored as a string
    assert ids("--since", "10m", "--limit", "2") == sorted(jobs.values(), reverse=True)[:2]
    assert ids("--since", "2999-01-01T00:00:00Z") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--status", "bogus"], "unknown status 'bogus'"),
        (["--queue", "profile"], "unknown queue 'profile' (did you mean 'profiles'?)"),
        (["--lane", "bse"], "unknown lane 'bse' (did you mean 'base'?)"),
        (["--since", "yesterday"], "--since 'yesterday' is neither a duration"),
        # as failures list and issues list say it (it said "must be between 1 and 10000")
        (["--limit", "0"], "--limit: 0 is out of range. Use 1 to 10000."),
        (["--limit", "10001"], "--limit: 10001 is out of range. Use 1 to 10000."),
    ],
)
def test_list_rejects_bad_filters(cli, db_url: str, args: list[str], message: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "jobs", "list", *args)
    assert result.exit_code == 2
    assert message in " ".join(result.stderr.split())
    assert "Traceback" not in result.stderr


def test_show_json_contract(cli, db_url: str, jobs: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    job_id = jobs["profile_7"]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobsys_failures (job_id, task, queue, attempt, args, error_class, "
            "message, kind, retryable, retry_state) VALUES (%s, 'demo.refresh_profile', "
            "'profiles', 1, '{}', 'KeyError', %s, 'runtime', true, '{\"retried\": false}')",
            (job_id, f"token {CANARY} rejected"),
        )
        pipeline = conn.execute(
            "INSERT INTO jobsys_pipelines (name, status) VALUES ('refresh', 'running') RETURNING id"
        ).fetchone()
        assert pipeline is not None
        conn.execute(
            "INSERT INTO jobsys_pipeline_steps (pipeline_id, step, stage, task, queue, job_id) "
            "VALUES (%s, 'fetch', 1, 'demo.refresh_profile', 'profiles', %s)",
            (pipeline[0], job_id),
        )
    result = cli("--database-url", db_url, "jobs", "show", str(job_id), "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data["id"] == job_id and data["args"]["token"] == "[REDACTED]"
    assert [h["type"] for h in data["history"]] == ["deferred"]
    assert data["failures"][0]["kind"] == "runtime"
    assert data["failures"][0]["message"] == "token [REDACTED] rejected"
    assert data["retry_state"] == {"retried": False}
    assert data["pipeline"]["name"] == "refresh"
    assert [s["step"] for s in data["pipeline"]["steps"]] == ["fetch"]
    assert CANARY not in result.stdout

    result = cli("--database-url", db_url, "jobs", "show", str(job_id))
    assert result.exit_code == 0 and "deferred" in result.stdout and CANARY not in result.stdout

    result = cli("--database-url", db_url, "jobs", "show", "987654")
    assert result.exit_code == 1
    assert "no job 987654" in result.stderr


def test_cancel_waiting_running_and_refused(cli, db_url: str, jobs: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "jobs", "cancel", str(jobs["profile_8"]), "--json")
    assert result.exit_code == 0, result.stderr
    data = result.json()
    assert data == {
        "id": jobs["profile_8"],
        "previous_status": "todo",
        "result": "cancelled",
        "audit_id": data["audit_id"],
    }

    result = cli("--database-url", db_url, "jobs", "cancel", str(jobs["face"]), "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["result"] == "abort_requested"

    with psycopg.connect(db_url) as conn:
        rows = dict(
            conn.execute(
                "SELECT id, status::text || '/' || abort_requested::text FROM procrastinate_jobs"
            ).fetchall()
        )
    assert rows[jobs["profile_8"]] == "cancelled/false"
    assert rows[jobs["face"]] == "doing/true"
    with psycopg.connect(db_url) as conn:
        audit = conn.execute(
            "SELECT id, action, filters, counts FROM jobsys_bulk_actions ORDER BY id"
        ).fetchall()
    assert audit == [  # one audit row per cancel, as a bulk cancel writes
        (data["audit_id"], "jobs_cancel", {"job_id": jobs["profile_8"]}, {"cancelled": 1}),
        (data["audit_id"] + 1, "jobs_cancel", {"job_id": jobs["face"]}, {"abort_requested": 1}),
    ]

    result = cli("--database-url", db_url, "jobs", "cancel", str(jobs["sync_7"]))
    assert result.exit_code == 2
    assert f"job {jobs['sync_7']} is succeeded" in result.stderr
    result = cli("--database-url", db_url, "jobs", "cancel", "987654")
    assert result.exit_code == 1 and "no job 987654" in result.stderr


@pytest.mark.parametrize(
    ("args", "given"),
    [(["cancel", "abc"], "'abc'"), (["show", "0"], "'0'"), (["retry", "12x"], "'12x'")],
)
def test_a_bad_job_id_is_named(cli, db_url: str, args: list[str], given: str) -> None:  # type: ignore[no-untyped-def]
    result = cli("--database-url", db_url, "jobs", *args)
    assert (result.exit_code, result.stderr) == (  # was Click's "is not a valid int range"
        2,
        f"error: {given} is not a job id: job ids are whole numbers from 1.\n"
        "List them with `jobsys jobs list`.\n",
    )


def test_metrics_parse_as_prometheus(cli, db_url: str, jobs: dict[str, int]) -> None:  # type: ignore[no-untyped-def]
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO jobsys_issues (fingerprint, kind, title) "
            "VALUES ('a', 'service_outage', 'ai down')"
        )
        conn.execute(
            "INSERT INTO jobsys_worker_processes (id, hostname, pid, lanes) "
            "VALUES ('h:1:x', 'h', 1, ARRAY['base'])"
        )
        conn.execute(
            "INSERT INTO jobsys_schedule_entries (name, high_water) "
            "VALUES ('profile_refresh', now() - interval '3 hours')"
        )
    result = cli("--database-url", db_url, "metrics")
    assert result.exit_code == 0, result.stderr
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    samples = {
        (f.name, tuple(sorted(s.labels.items()))): s.value
        for f in families.values()
        for s in f.samples
    }
    assert (
        samples[("jobsys_jobs", (("lane", "base"), ("queue", "profiles"), ("status", "waiting")))]
        == 2
    )
    assert (
        samples[
            (
                "jobsys_jobs",
                (("lane", "ai_face_queue"), ("queue", "ai_face_queue"), ("status", "running")),
            )
        ]
        == 1
    )
    assert samples[("jobsys_open_issues", (("kind", "service_outage"),))] == 1
    assert ("jobsys_failures_recent", (("kind", "authentication"),)) in samples
    lag = samples[("jobsys_schedule_lag_seconds", (("entry", "profile_refresh"),))]
    assert 2 * 3600 - 60 <= lag <= 3 * 3600
    assert (
        samples[("jobsys_queue_oldest_wait_seconds", (("lane", "base"), ("queue", "profiles")))] > 0
    )
    heartbeat = [k for k in samples if k[0] == "jobsys_worker_heartbeat_age_seconds"]
    assert len(heartbeat) == 1


def test_worker_metrics_endpoint_serves_the_same(db_url: str, settings) -> None:  # type: ignore[no-untyped-def]
    import urllib.error
    import urllib.request

    from jobsys.app import worker_services
    from jobsys.config.application import load_config
    from jobsys.live.services import EventFlusher, MetricsTicker
    from jobsys.metrics.endpoint import MetricsEndpoint

    config = load_config(settings)
    kinds = [type(s) for s in worker_services(config)]
    assert kinds.count(EventFlusher) == 1
    assert kinds.count(MetricsTicker) == 1

    async def scenario() -> tuple[str, int]:
        app = build_engine_app(db_url)
        async with app.open_async():
            endpoint = MetricsEndpoint(config, "127.0.0.1", 0)  # 0: any free port
            stop = asyncio.Event()
            serving = asyncio.create_task(endpoint.run(app, stop))
            await wait_until_async(lambda: endpoint.bound_port, 10, "the endpoint to listen")
            base = f"http://127.0.0.1:{endpoint.bound_port}"

            def get(path: str) -> tuple[int, str]:
                try:
                    with urllib.request.urlopen(base + path, timeout=10) as resp:
                        return resp.status, resp.read().decode()
                except urllib.error.HTTPError as exc:
                    return exc.code, ""

            status, body = await asyncio.to_thread(get, "/metrics")
            missing, _ = await asyncio.to_thread(get, "/nope")
            stop.set()
            await serving
            assert status == 200
            return body, missing

    body, missing = asyncio.run(scenario())
    assert missing == 404
    names = {f.name for f in text_string_to_metric_families(body)}
    assert {"jobsys_jobs", "jobsys_open_issues", "jobsys_failures_recent"} <= names
