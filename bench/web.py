"""The web console at scale: page server time with 1,000,000 jobs and 1,000,000
failures, and what 50 browsers on the live stream cost.

Pages are timed in-process (Starlette's TestClient: routing, the service call, the
template) beside their peer, the same service function called directly (what the
CLI's ``--json`` does), so the ratio is the web's own overhead. The live stream is
measured on a real ``jobsys web`` process: its CPU time (psutil) while 50 SSE clients
follow 100 NOTIFY events a second, beside the same process with no client, and the
number of LISTEN connections it holds.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from bench.live import throwaway_database

REPO = Path(__file__).resolve().parents[1]
JOBS = 1_000_000
PAGE_RUNS = 7
BROWSERS = 50
EVENTS_PER_SECOND = 100
STREAM_SECONDS = 10.0
#: The issue's targets.
PAGE_TARGET_MS = 200.0
CPU_TARGET_PERCENT = 5.0


def _settings(url: str) -> Any:
    from jobsys.settings import Settings

    return Settings(
        database_url=url, home=REPO / ".jobsys", config_dir=REPO / "config", operator="bench"
    )


def populate(url: str) -> dict[str, Any]:
    from bench import failures
    from bench.live_data import populate as populate_jobs
    from jobsys.config import load

    started = time.perf_counter()
    with psycopg.connect(url, autocommit=True) as conn:
        populate_jobs(conn, JOBS)
    failures.seed(url, load(REPO / "config"))
    return {"seconds": round(time.perf_counter() - started, 1), "failures": failures.FAILURES}


def pages(url: str) -> dict[str, Any]:
    """Median server time per page beside its service call (ms), 1M jobs + 1M failures."""
    from starlette.testclient import TestClient

    from jobsys.failures import filters
    from jobsys.failures import service as failures_service
    from jobsys.issues import service as issues_service
    from jobsys.jobs import browser
    from jobsys.lanes.service import queue_overview
    from jobsys.lanes.workers import list_workers
    from jobsys.live.dashboard import snapshot_once
    from jobsys.pipelines.service import list_pipelines
    from jobsys.retry.service import RetryRequest, retry
    from jobsys.schedule.service import list_entries, list_runs
    from jobsys.web.app import create_app
    from jobsys.web.auth import Credentials
    from jobsys.web.pages import GROUP_WINDOW, SEARCH_CHUNK_IDS

    settings = _settings(url)
    with psycopg.connect(url) as conn:
        failure_id = conn.execute("SELECT max(id) FROM jobsys_failures").fetchone()[0]
        job_id = conn.execute("SELECT max(id) FROM procrastinate_jobs").fetchone()[0]
        issue_id = conn.execute(
            "SELECT id FROM jobsys_issues WHERE status = 'open' ORDER BY id LIMIT 1"
        ).fetchone()[0]

    def peer(coro_fn: Any) -> Any:
        return lambda: asyncio.run(coro_fn())

    cases: dict[str, tuple[str, Any]] = {
        "dashboard": ("/admin/background_jobs", peer(lambda: snapshot_once(settings))),
        "failures": (
            "/admin/background_jobs/failures",
            peer(
                lambda: failures_service.list_failures(
                    settings, filters.failure_filters(), limit=50
                )
            ),
        ),
        "failures_kind_queue": (
            "/admin/background_jobs/failures?kind=authentication&queue=profiles",
            peer(
                lambda: failures_service.list_failures(
                    settings,
                    filters.failure_filters(kind="authentication", queue="profiles"),
                    limit=50,
                )
            ),
        ),
        "failures_transient_ai_face": (
            "/admin/background_jobs/failures?kind=transient&queue=ai_face_queue",
            peer(
                lambda: failures_service.list_failures(
                    settings,
                    filters.failure_filters(kind="transient", queue="ai_face_queue"),
                    limit=50,
                )
            ),
        ),
        "failures_kind_task": (
            "/admin/background_jobs/failures?kind=authentication&task=app.task_2",
            peer(
                lambda: failures_service.list_failures(
                    settings,
                    filters.failure_filters(kind="authentication", task="app.task_2"),
                    limit=50,
                )
            ),
        ),
        "failures_queue_since": (
            "/admin/background_jobs/failures?queue=profiles&since=1h",
            peer(
                lambda: failures_service.list_failures(
                    settings, filters.failure_filters(queue="profiles", since="1h"), limit=50
                )
            ),
        ),
        # The group view counts the newest GROUP_WINDOW matching failures (it says so);
        # its peer is the same bounded call, not the CLI's count of all of them.
        "failures_by_queue": (
            "/admin/background_jobs/failures?group_by=queue&kind=transient",
            peer(
                lambda: failures_service.list_failures(
                    settings,
                    filters.failure_filters(kind="transient"),
                    limit=50,
                    group_by="queue",
                    window=GROUP_WINDOW,
                )
            ),
        ),
        "failures_by_task": (
            "/admin/background_jobs/failures?group_by=task",
            peer(
                lambda: failures_service.list_failures(
                    settings,
                    filters.failure_filters(),
                    limit=50,
                    group_by="task",
                    window=GROUP_WINDOW,
                )
            ),
        ),
        "failures_error_text": (
            "/admin/background_jobs/failures?error=KeyError",
            peer(
                lambda: failures_service.list_failures(
                    settings, filters.failure_filters(error="KeyError"), limit=50
                )
            ),
        ),
        "failure_detail": (
            f"/admin/background_jobs/failures/{failure_id}",
            peer(lambda: failures_service.show_failure(settings, failure_id)),
        ),
        "jobs": ("/admin/jobs", peer(lambda: browser.list_jobs(settings, browser.JobFilters()))),
        "jobs_failed_profiles": (
            "/admin/jobs?status=failed&queue=profiles",
            peer(
                lambda: browser.list_jobs(
                    settings, browser.JobFilters(statuses=("failed",), queues=("profiles",))
                )
            ),
        ),
        # A text no job holds: the page searches SEARCH_CHUNK_IDS ids at a time for
        # about SEARCH_BUDGET_SECONDS; its peer is one such range (the CLI scans all).
        "jobs_arg_contains_rare": (
            "/admin/jobs?arg_contains=no-such-text",
            peer(
                lambda: browser.list_jobs(
                    settings,
                    browser.JobFilters(
                        arg_contains="no-such-text",
                        from_id=job_id - SEARCH_CHUNK_IDS,
                        below_id=job_id + 1,
                    ),
                )
            ),
        ),
        "job_detail": (f"/admin/jobs/{job_id}", peer(lambda: browser.show_job(settings, job_id))),
        "issues": ("/admin/issues", peer(lambda: issues_service.list_issues(settings))),
        "issue_detail": (
            f"/admin/issues/{issue_id}",
            peer(lambda: issues_service.show_issue(settings, issue_id)),
        ),
        "retry_preview_failure": (
            f"/admin/retry?failure={failure_id}",
            peer(lambda: retry(settings, RetryRequest(ids=(failure_id,), dry_run=True))),
        ),
        "queues": ("/admin/queues", peer(lambda: queue_overview(settings))),
        "workers": ("/admin/workers", peer(lambda: list_workers(settings))),
        "schedule": ("/admin/schedule", peer(lambda: list_entries(settings))),
        "pipelines": (
            "/admin/pipelines",
            peer(lambda: list_pipelines(settings, status=None, since=None, limit=50)),
        ),
        "fanouts": ("/admin/fanout", peer(lambda: list_runs(settings, limit=50))),
    }
    # Not a default view: counting every matching failure, on request (window=all).
    opt_in = {
        "failures_by_queue_all": (
            "/admin/background_jobs/failures?group_by=queue&kind=transient&window=all",
            peer(
                lambda: failures_service.list_failures(
                    settings, filters.failure_filters(kind="transient"), limit=50, group_by="queue"
                )
            ),
        ),
    }
    app = create_app(settings, Credentials(), database_url=url, live=False)
    result: dict[str, Any] = {}
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for name, (path, service_call) in {**cases, **opt_in}.items():
            assert client.get(path).status_code == 200, path  # warm: imports, plans
            service_call()
            page_ms, service_ms = [], []
            for _ in range(PAGE_RUNS):
                t = time.perf_counter()
                response = client.get(path)
                page_ms.append((time.perf_counter() - t) * 1000)
                assert response.status_code == 200, path
                t = time.perf_counter()
                service_call()
                service_ms.append((time.perf_counter() - t) * 1000)
            page, service = statistics.median(page_ms), statistics.median(service_ms)
            result[name] = {
                "page_median_ms": round(page, 1),
                "page_max_ms": round(max(page_ms), 1),
                "service_median_ms": round(service, 1),
                "ratio": round(page / service, 2) if service else None,
            }
            print(
                f"  {name:<22} page {page:7.1f} ms  service {service:7.1f} ms  "
                f"(max page {max(page_ms):.1f} ms)",
                flush=True,
            )
    result["worst_page_median_ms"] = max(result[name]["page_median_ms"] for name in cases)
    result["target_ms"] = PAGE_TARGET_MS
    return result


def _start_server(url: str) -> tuple[subprocess.Popen[str], str]:
    env = {**os.environ, "JOBSYS_DATABASE_URL": url, "JOBSYS_CONFIG_DIR": str(REPO / "config")}
    jobsys = str(Path(sys.executable).with_name("jobsys"))
    proc = subprocess.Popen(
        [jobsys, "web", "--port", "0"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        if "jobsys web console: " in line:
            base = line.split("jobsys web console: ")[1].split("/admin")[0]
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # drain
            time.sleep(0.5)
            return proc, base
    raise RuntimeError("jobsys web did not start")


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def _publish(url: str, seconds: float, rate: int) -> int:
    sent = 0
    with psycopg.connect(url, autocommit=True) as conn:
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            conn.execute(
                "SELECT pg_notify('jobsys_events', %s)",
                (json.dumps({"topic": "jobs_changed", "succeeded": 1, "ids": [sent]}),),
            )
            sent += 1
            delay = start + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
    return sent


def stream_cost(url: str) -> dict[str, Any]:
    import httpx2

    proc, base = _start_server(url)
    received = [0] * BROWSERS  # messages (one per topic per coalescing window)
    carried = [0] * BROWSERS  # the NOTIFY events those messages stand for
    stop = threading.Event()

    def client(i: int) -> None:
        try:
            with httpx2.Client(timeout=60) as c, c.stream("GET", f"{base}/admin/events") as r:
                topic = ""
                for line in r.iter_lines():
                    if line.startswith("event: "):
                        topic = line[7:]
                    elif line.startswith("data: ") and topic == "jobs_changed":
                        received[i] += 1
                        carried[i] += int(json.loads(line[6:]).get("events", 1))
                    if stop.is_set():
                        return
        except httpx2.HTTPError:
            return

    try:
        cpu = _cpu_seconds(proc.pid)
        _publish(url, STREAM_SECONDS, EVENTS_PER_SECOND)  # peer: nobody watching
        idle_cpu = _cpu_seconds(proc.pid) - cpu
        threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(BROWSERS)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        with psycopg.connect(url) as conn:
            listens = conn.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'jobsys-subscriber'"
            ).fetchone()[0]
        cpu = _cpu_seconds(proc.pid)
        started = time.perf_counter()
        sent = _publish(url, STREAM_SECONDS, EVENTS_PER_SECOND)
        time.sleep(0.5)
        wall = time.perf_counter() - started
        busy_cpu = _cpu_seconds(proc.pid) - cpu
        stop.set()
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "browsers": BROWSERS,
        "events_sent": sent,
        "events_per_second": EVENTS_PER_SECOND,
        "min_messages_per_browser": min(received),
        "min_events_carried_per_browser": min(carried),
        "listen_connections": int(listens),
        "cpu_percent_with_browsers": round(100 * busy_cpu / wall, 2),
        "cpu_percent_no_browser": round(100 * idle_cpu / STREAM_SECONDS, 2),
        "target_cpu_percent": CPU_TARGET_PERCENT,
    }


def run() -> dict[str, Any]:
    details: dict[str, Any] = {}
    with throwaway_database() as url:
        details["stream"] = stream_cost(url)
        print(f"  stream: {details['stream']}", flush=True)
        details["populate"] = populate(url)
        details["pages"] = pages(url)
    results_dir = REPO / "bench" / "results"
    results_dir.mkdir(exist_ok=True)
    (results_dir / "web.json").write_text(json.dumps(details, indent=2))
    stream, page = details["stream"], details["pages"]
    return {
        "pages_worst_median_ms_1m": page["worst_page_median_ms"],
        "dashboard_page_ms_1m": page["dashboard"]["page_median_ms"],
        "failures_page_ms_1m": page["failures"]["page_median_ms"],
        "jobs_page_ms_1m": page["jobs"]["page_median_ms"],
        "sse_50_browsers_listen_connections": stream["listen_connections"],
        "sse_50_browsers_cpu_percent": stream["cpu_percent_with_browsers"],
        "sse_no_browser_cpu_percent": stream["cpu_percent_no_browser"],
    }
