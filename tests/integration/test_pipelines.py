"""Pipelines with a real worker: lanes, order, join, failure, cancel, and the retry rules."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from typing import Any

from _retry_support import BEHAVIOUR, RAN, _act, procrastinate_app, sql
from waiting import wait_until_async

from jobsys import task
from jobsys.db.connect import connect
from jobsys.pipelines.definitions import pipeline, step, step_task_names
from jobsys.pipelines.middleware import pipeline_middleware
from jobsys.pipelines.store import start_pipeline

LANES = {
    "download": "story_downloads",
    "visual": "ai_visual_queue",
    "faces": "ai_face_queue",
    "ocr": "ai_ocr_queue",
    "metadata": "ai_metadata_queue",
}


@task(queue="story_downloads", name="t_pipe.download")
async def p_download(story: str) -> None:
    await _act("download", f"{story}:download")


@task(queue="ai_visual_queue", name="t_pipe.visual")
async def p_visual(story: str) -> None:
    await _act("visual", f"{story}:visual")


@task(queue="ai_face_queue", name="t_pipe.faces")
async def p_faces(story: str) -> None:
    await _act("faces", f"{story}:faces")


@task(queue="ai_ocr_queue", name="t_pipe.ocr")
async def p_ocr(story: str) -> None:
    await _act("ocr", f"{story}:ocr")


@task(queue="ai_metadata_queue", name="t_pipe.metadata")
async def p_metadata(story: str) -> None:
    await _act("metadata", f"{story}:metadata")


STORY = pipeline(
    "t_pipe.story",
    step("download", p_download),
    [step("visual", p_visual), step("faces", p_faces), step("ocr", p_ocr)],
    step("metadata", p_metadata),
)


def test_step_tasks_follow_the_pipelines_declared() -> None:
    """step_task_names (asked for every job a worker runs) is made once per set of
    declared pipelines: a pipeline declared after a call is in the next answer."""
    assert {"t_pipe.download", "t_pipe.metadata"} <= step_task_names()
    assert "t_pipe.late_step" not in step_task_names()
    pipeline("t_pipe.late", step("late", "t_pipe.late_step"))
    assert "t_pipe.late_step" in step_task_names()
    assert step_task_names() is step_task_names()


WORKER = {
    "wait": False,
    "concurrency": 4,
    "install_signal_handlers": False,
    "fetch_job_polling_interval": 0.05,
    "abort_job_polling_interval": 0.05,
    "listen_notify": False,
}


async def run_worker(app: Any, **overrides: Any) -> None:
    from _retry_support import capture_middleware

    options = {**WORKER, **overrides}
    while True:  # a worker with wait=False stops before the next stage is enqueued
        await app.run_worker_async(
            queues=list(LANES.values()),
            worker_middleware=[capture_middleware(), pipeline_middleware],
            **options,
        )
        if options["wait"] or not await todo(app):
            return


async def todo(app: Any) -> int:
    async with app.connector.pool.connection() as conn:
        cur = await conn.execute(
            "SELECT count(*) FROM procrastinate_jobs"
            " WHERE status = 'todo' AND queue_name = ANY(%s)",
            (list(LANES.values()),),
        )
        row = await cur.fetchone()
    return int(row[0])


async def start(db_url: str, story: str) -> int:
    async with connect(db_url) as conn:
        return await start_pipeline(
            conn, "t_pipe.story", entity=f"story:{story}", args={"story": story}
        )


def steps(db_url: str, pipeline_id: int) -> dict[str, dict[str, Any]]:
    rows = sql(
        db_url,
        "SELECT s.step, s.status, s.attempts, s.job_id, j.queue_name, j.status::text AS job_status"
        " FROM jobsys_pipeline_steps s LEFT JOIN procrastinate_jobs j ON j.id = s.job_id"
        " WHERE s.pipeline_id = %s",
        (pipeline_id,),
    )
    return {r["step"]: r for r in rows}


def status(db_url: str, pipeline_id: int) -> str:
    return str(
        sql(db_url, "SELECT status FROM jobsys_pipelines WHERE id = %s", (pipeline_id,))[0][
            "status"
        ]
    )


async def test_steps_run_on_their_lanes_in_order_and_parallel_steps_join(db_url: str) -> None:
    stories = [f"s{i}" for i in range(6)]
    ids = [await start(db_url, s) for s in stories]
    # Only the first stage is enqueued at start.
    assert {
        r["step"]
        for r in sql(db_url, "SELECT step FROM jobsys_pipeline_steps WHERE job_id IS NOT NULL")
    } == {"download"}
    RAN.clear()
    async with procrastinate_app(db_url) as app:
        await run_worker(app)
    for story, pid in zip(stories, ids, strict=True):
        assert status(db_url, pid) == "succeeded"
        by_step = steps(db_url, pid)
        assert {name: row["queue_name"] for name, row in by_step.items()} == LANES
        assert all(
            row["status"] == "succeeded" and row["attempts"] == 1 for row in by_step.values()
        )
        order = [name for name, key, _ in RAN if key.startswith(f"{story}:")]
        assert order[0] == "download" and order[-1] == "metadata"
        assert sorted(order[1:4]) == ["faces", "ocr", "visual"]
    # Exactly one metadata job per pipeline although its three parents raced to finish.
    assert sql(
        db_url, "SELECT count(*) AS n FROM procrastinate_jobs WHERE task_name = 't_pipe.metadata'"
    ) == [{"n": 6}]


async def test_failure_fails_the_pipeline_and_a_retry_resumes_it(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    pid = await start(db_url, "f1")
    BEHAVIOUR["f1:faces"] = "fail"
    async with procrastinate_app(db_url) as app:
        await run_worker(app)
        assert status(db_url, pid) == "failed"
        by_step = steps(db_url, pid)
        assert by_step["faces"]["status"] == "failed"
        assert by_step["visual"]["status"] == by_step["ocr"]["status"] == "succeeded"
        assert by_step["metadata"]["job_id"] is None  # never enqueued
        shown = await asyncio.to_thread(
            cli, "--database-url", db_url, "pipelines", "show", str(pid), "--json"
        )
        assert shown.exit_code == 0
        assert shown.json()["args"] == {"story": "f1"}
        faces = next(s for s in shown.json()["steps"] if s["step"] == "faces")
        assert faces["failures"] == 1 and faces["last_error"].startswith("KeyError")
        failure_id = faces["failure_ids"][0]
        BEHAVIOUR["f1:faces"] = "ok"
        result = await asyncio.to_thread(
            cli, "--database-url", db_url, "retry", str(failure_id), "--json"
        )
        assert result.json()["results"][0]["decision"] == "retried"
        assert status(db_url, pid) == "running"
        await run_worker(app)
    assert status(db_url, pid) == "succeeded"
    assert steps(db_url, pid)["faces"]["attempts"] == 2


async def test_cancel_cancels_waiting_steps_and_aborts_running_ones(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    waiting = await start(db_url, "c-wait")
    running = await start(db_url, "c-run")
    BEHAVIOUR["c-run:download"] = "slow"
    result = await asyncio.to_thread(
        cli, "--database-url", db_url, "pipelines", "cancel", str(waiting), "--json"
    )
    assert result.exit_code == 0
    assert result.json()["cancelled_jobs"] == [steps(db_url, waiting)["download"]["job_id"]]
    assert status(db_url, waiting) == "cancelled"
    async with procrastinate_app(db_url) as app:
        worker = asyncio.create_task(run_worker(app, wait=True))
        await wait_until_async(lambda: steps(db_url, running)["download"]["status"] == "running")
        result = await asyncio.to_thread(
            cli, "--database-url", db_url, "pipelines", "cancel", str(running), "--json"
        )
        assert result.json()["abort_requested_jobs"] == [
            steps(db_url, running)["download"]["job_id"]
        ]
        await wait_until_async(
            lambda: steps(db_url, running)["download"]["job_status"] == "aborted"
        )
        worker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await worker
    assert status(db_url, running) == "cancelled"
    assert steps(db_url, running)["download"]["status"] == "cancelled"
    assert steps(db_url, running)["visual"]["job_id"] is None
    # Cancelling again changes nothing; a succeeded pipeline cannot be cancelled.
    again = await asyncio.to_thread(
        cli, "--database-url", db_url, "pipelines", "cancel", str(running), "--json"
    )
    assert (again.exit_code, again.json()["already_cancelled"]) == (0, True)
    listed = await asyncio.to_thread(
        cli, "--database-url", db_url, "pipelines", "list", "--status", "cancelled", "--json"
    )
    assert {p["id"] for p in listed.json()["items"]} == {waiting, running}


async def test_terminal_pipelines_refuse_retry(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    cancelled = await start(db_url, "t-cancel")
    other_path = await start(db_url, "t-other")
    BEHAVIOUR["t-cancel:ocr"] = BEHAVIOUR["t-other:ocr"] = "fail"
    async with procrastinate_app(db_url) as app:
        await run_worker(app)
        failures = {
            r["pid"]: (r["id"], r["job_id"])
            for r in sql(
                db_url,
                "SELECT s.pipeline_id AS pid, f.id, f.job_id FROM jobsys_failures f"
                " JOIN jobsys_pipeline_steps s ON s.job_id = f.job_id",
            )
        }
        # 1. The operator gives up on a pipeline while one of its steps had failed.
        result = await asyncio.to_thread(
            cli, "--database-url", db_url, "pipelines", "cancel", str(cancelled)
        )
        assert result.exit_code == 0
        # 2. The other one succeeds by another path: Procrastinate's own retry.
        BEHAVIOUR["t-other:ocr"] = "ok"
        await app.job_manager.retry_job_by_id_async(
            failures[other_path][1], datetime.datetime.now(datetime.UTC)
        )
        await run_worker(app)
    assert status(db_url, other_path) == "succeeded"
    for pid, expected in (
        (cancelled, "its pipeline already cancelled"),
        (other_path, "its pipeline step already succeeded"),
    ):
        result = await asyncio.to_thread(
            cli, "--database-url", db_url, "retry", str(failures[pid][0]), "--json"
        )
        assert result.exit_code == 3
        assert result.json()["results"][0]["decision"] == "skipped_terminal_pipeline"
        assert result.json()["results"][0]["detail"] == expected
    refused = await asyncio.to_thread(
        cli, "--database-url", db_url, "pipelines", "cancel", str(other_path)
    )
    assert refused.exit_code == 2 and "already succeeded" in refused.stderr


async def test_show_redacts_secrets_in_pipeline_args(cli, db_url: str) -> None:  # type: ignore[no-untyped-def]
    async with connect(db_url) as conn:
        pid = await start_pipeline(
            conn,
            "t_pipe.story",
            entity="story:x",
            args={"story": "x", "session_token": "s3cr3t-value"},
        )
    shown = await asyncio.to_thread(
        cli, "--database-url", db_url, "pipelines", "show", str(pid), "--json"
    )
    assert shown.json()["args"] == {"story": "x", "session_token": "[REDACTED]"}
    assert "s3cr3t-value" not in shown.stdout
