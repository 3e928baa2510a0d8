"""DEMO: the simulated AI service, the AI tasks it drives, and the ongoing story
pipelines (story 4 of the operator stories, shown by ``make run``)."""

from __future__ import annotations

import asyncio
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import failures_support as fx
import pytest
from failures_support import spool_home  # noqa: F401  (fixture)
from waiting import wait_until

import jobsys.demo.tasks as demo_tasks
from jobsys import TransientError
from jobsys.config.models import Health, ServiceCheck
from jobsys.db.connect import connect
from jobsys.demo import ai_service, pipelines
from jobsys.demo.ai_service import Cycle, SimulatedAiService
from jobsys.issues.probes import check_services
from jobsys.jobs import defer

AI_QUEUES = ["ai", "ai_visual_queue", "ai_face_queue", "ai_ocr_queue", "ai_metadata_queue"]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _wait_for_status(url: str, status: int, deadline_seconds: float = 5.0) -> float:
    start = time.monotonic()
    wait_until(
        lambda: _status(url) == status, deadline_seconds, f"{url} to answer {status}", interval=0.02
    )
    return time.monotonic() - start


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def simulated(clock: FakeClock) -> Iterator[SimulatedAiService]:
    """A simulated AI service on a free port, driven by ``clock``, active in-process."""
    service = SimulatedAiService("127.0.0.1", 0, "/health", Cycle(10, 5, 20), clock=clock)
    ai_service.activate(service)
    yield service
    ai_service.stop_active()


def _config_for(service: SimulatedAiService):  # type: ignore[no-untyped-def]
    check = ServiceCheck(url=service.url, timeout_seconds=1)
    return fx.repo_config(health=Health(services={"ai": check}))


def test_simulated_service_follows_a_real_short_cycle() -> None:
    service = SimulatedAiService("127.0.0.1", 0, "/health", Cycle(0.3, 0.5, 0.5))
    try:
        assert _status(service.url) == 200
        _wait_for_status(service.url, 503)  # first outage after 0.3 s
        _wait_for_status(service.url, 200)  # back after 0.5 s
        _wait_for_status(service.url, 503)  # and down again 0.5 s later
    finally:
        service.stop()


def test_simulated_service_answers_on_its_path_only(
    simulated: SimulatedAiService, clock: FakeClock
) -> None:
    base = f"http://127.0.0.1:{simulated.port}"
    assert (_status(f"{base}/health"), _status(f"{base}/health?x=1"), _status(f"{base}/")) == (
        200,
        200,
        404,
    )
    clock.now = 10  # down: 503 everywhere
    assert (_status(f"{base}/health"), _status(f"{base}/")) == (503, 503)
    clock.now = 15
    assert _status(f"{base}/health") == 200


def test_start_for_takes_the_configured_port_and_skips_a_taken_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = fx.repo_config(
            health=Health(services={"ai": ServiceCheck(url=f"http://127.0.0.1:{port}/health")})
        )
        result = ai_service.start_for(config)
        assert result.service is None and ai_service.active() is None
        assert "port is taken" in result.message and f"127.0.0.1:{port}" in result.message
    # Free now: the simulation starts there and becomes the one the AI tasks follow.
    result = ai_service.start_for(config)
    try:
        assert result.service is not None and ai_service.active() is result.service
        assert result.service.port == port
        assert _status(f"http://127.0.0.1:{port}/health") == 200
        assert "first outage after 3 min" in result.message
    finally:
        ai_service.stop_active()
    assert ai_service.active() is None


async def test_ai_tasks_fail_transiently_naming_ai_while_it_is_down(
    simulated: SimulatedAiService, clock: FakeClock
) -> None:
    clock.now = 11
    calls = [
        demo_tasks.ai_face_match(media_id=7),
        demo_tasks.ai_ocr(media_id=7),
        demo_tasks.process_video(media_id=7),
        pipelines.analyse_visual(story_id=3, account_id=1),
        pipelines.read_text(story_id=3, account_id=1),
    ]
    for call in calls:
        with pytest.raises(TransientError) as caught:
            await call
        assert caught.value.service == "ai"
        assert "unavailable" in str(caught.value)
    # Steps that do not call the AI service are not affected.
    await pipelines.download_story(story_id=3, account_id=1)


async def _start_story_pipelines_in_a_worker(db_url: str, config):  # type: ignore[no-untyped-def]
    app = fx.build_app(db_url, config)
    defer.configure(config, url=db_url)
    try:
        async with app.open_async():
            await fx.defer(app, [("demo.start_story_pipelines", {})])
            # One slot: a wait=False worker stops at its first empty fetch, and with
            # free slots that fetch can run before the start job has deferred the
            # downloads (the test then saw half the downloads pending).
            await fx.run_worker(app, config, queues=["story_downloads"], concurrency=1)
    finally:
        defer.deactivate()


async def test_start_story_pipelines_creates_pipelines_and_ai_jobs(
    db_url: str,
    spool_home,  # noqa: F811
) -> None:
    from jobsys.demo import store
    from jobsys.demo.run import AI_TASKS

    async with connect(db_url) as conn:
        await store.seed(conn, 20)
    config = fx.repo_config()
    await _start_story_pipelines_in_a_worker(db_url, config)
    await _start_story_pipelines_in_a_worker(db_url, config)
    runs = fx.rows(
        db_url,
        "SELECT args FROM procrastinate_jobs WHERE task_name = 'demo.start_story_pipelines'"
        " AND status = 'succeeded'",
    )
    assert len(runs) == 2
    pipes = fx.rows(db_url, "SELECT name, entity, args FROM jobsys_pipelines ORDER BY id")
    per_run = pipelines.PIPELINES_PER_RUN
    assert len(pipes) == 2 * per_run
    story_ids = [p["args"]["story_id"] for p in pipes]
    assert story_ids == list(range(1, 2 * per_run + 1))  # increasing across runs
    assert {p["name"] for p in pipes} == {pipelines.PIPELINE_NAME}
    assert all(1 <= p["args"]["account_id"] <= 20 for p in pipes)
    # The worker ran the downloads: every pipeline waits on its AI stage now.
    steps = fx.rows(
        db_url,
        "SELECT step, status, count(*) AS n FROM jobsys_pipeline_steps"
        " WHERE job_id IS NOT NULL GROUP BY step, status ORDER BY step",
    )
    assert steps == [
        {"step": "download", "status": "succeeded", "n": 2 * per_run},
        {"step": "faces", "status": "pending", "n": 2 * per_run},
        {"step": "ocr", "status": "pending", "n": 2 * per_run},
        {"step": "visual", "status": "pending", "n": 2 * per_run},
    ]
    ai_jobs = fx.rows(
        db_url,
        "SELECT task_name, count(*) AS n FROM procrastinate_jobs"
        " WHERE task_name = ANY(%s) AND status = 'todo' GROUP BY task_name",
        (list(AI_TASKS),),
    )
    assert {r["task_name"]: r["n"] for r in ai_jobs} == {
        t: 2 * pipelines.AI_JOBS_PER_TASK_PER_RUN for t in AI_TASKS
    }


def test_config_check_passes_with_the_demo_schedule_entry(cli) -> None:  # type: ignore[no-untyped-def]
    result = cli("config", "check", "--json")
    assert result.exit_code == 0, result.stderr
    config = fx.repo_config()
    entry = config.schedule.entries["demo_story_pipelines"]
    assert (entry.task, entry.cron) == ("demo.start_story_pipelines", "*/2 * * * *")


async def test_outage_opens_one_issue_collects_ai_failures_and_resolves(
    db_url: str,
    simulated: SimulatedAiService,
    clock: FakeClock,
    spool_home,  # noqa: F811
) -> None:
    config = _config_for(simulated)
    app = fx.build_app(db_url, config)
    async with connect(db_url) as conn, app.open_async():
        assert (await check_services(conn, config))["open"] == []
        clock.now = 11  # the simulated outage
        (outage_id,) = (await check_services(conn, config))["open"]
        jobs = [("demo.ai_face_match", {"media_id": n}) for n in range(4)]
        jobs += [("demo.ai_ocr", {"media_id": n}) for n in range(4)]
        await fx.defer(app, jobs)
        await asyncio.gather(
            fx.run_worker(app, config, lane="ai_face_queue", queues=["ai_face_queue"]),
            fx.run_worker(app, config, lane="ai_ocr_queue", queues=["ai_ocr_queue"]),
        )
        failures = fx.rows(db_url, "SELECT kind, service, issue_id FROM jobsys_failures")
        assert len(failures) == 8
        assert {(f["kind"], f["service"], f["issue_id"]) for f in failures} == {
            ("transient", "ai", outage_id)
        }
        issues = fx.rows(db_url, "SELECT id, kind, status FROM jobsys_issues")
        assert issues == [{"id": outage_id, "kind": "service_outage", "status": "open"}]
        clock.now = 15  # back up
        assert (await check_services(conn, config))["resolved"] == [outage_id]
    (issue,) = fx.rows(db_url, "SELECT status, resolved_by FROM jobsys_issues")
    assert issue == {"status": "resolved", "resolved_by": "auto"}
