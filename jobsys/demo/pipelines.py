"""DEMO ONLY: the story/media pipeline across the AI lanes.

Download the story on ``story_downloads``, then visual, face and OCR analysis in
parallel on their capsule lanes, then metadata once all three are done. Simulated
latency and a few transient failures of the AI service (all of its AI steps fail
while the simulated AI service of ``jobsys.demo.ai_service`` is down), so ``make run``
shows a pipeline waiting, joining, failing and being retried. The steps are async so
that ``jobsys pipelines cancel`` aborts a running step at once.

``demo.start_story_pipelines`` (schedule entry ``demo_story_pipelines``, every 2
minutes) keeps the story and AI lanes busy after the initial burst.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from jobsys import TransientError, task
from jobsys.engine import pool
from jobsys.pipelines.definitions import pipeline, step
from jobsys.pipelines.store import start_pipeline

PIPELINE_NAME = "demo.story_media"
#: Probability that an AI step fails with a transient AI-service error.
AI_FAILURE_RATE = 0.05
LATENCY_SECONDS = (0.05, 0.5)
#: DEMO: story pipelines started by each run of ``demo.start_story_pipelines``...
PIPELINES_PER_RUN = 3
#: ...and jobs deferred per AI capsule task (``jobsys.demo.run.AI_TASKS``).
AI_JOBS_PER_TASK_PER_RUN = 1


async def _work(story_id: int, *, ai: bool = False) -> None:
    if ai:
        # imported here, as in demo.tasks: every read command that checks the tasks
        # imports this module, and the simulated service's HTTP server is not cheap
        from jobsys.demo import ai_service

        ai_service.raise_if_down(f"analysis of story {story_id}")  # the simulated outage
    await asyncio.sleep(random.uniform(*LATENCY_SECONDS))
    if ai and random.random() < AI_FAILURE_RATE:
        raise TransientError(f"AI service timed out on story {story_id}", service="ai")


@task(queue="story_downloads", name="demo.story.download", rerun_safe=True)
async def download_story(story_id: int, account_id: int) -> None:
    await _work(story_id)


@task(queue="ai_visual_queue", name="demo.story.visual", rerun_safe=True, service="ai")
async def analyse_visual(story_id: int, account_id: int) -> None:
    await _work(story_id, ai=True)


@task(queue="ai_face_queue", name="demo.story.faces", rerun_safe=True, service="ai")
async def detect_faces(story_id: int, account_id: int) -> None:
    await _work(story_id, ai=True)


@task(queue="ai_ocr_queue", name="demo.story.ocr", rerun_safe=True, service="ai")
async def read_text(story_id: int, account_id: int) -> None:
    await _work(story_id, ai=True)


@task(queue="ai_metadata_queue", name="demo.story.metadata", rerun_safe=True)
async def build_metadata(story_id: int, account_id: int) -> None:
    await _work(story_id)


story_media = pipeline(
    PIPELINE_NAME,
    step("download", download_story),
    [step("visual", analyse_visual), step("faces", detect_faces), step("ocr", read_text)],
    step("metadata", build_metadata),
)


async def start(conn: Any, story_id: int, account_id: int) -> int:
    """Start the story pipeline for one story (the demo runner calls this)."""
    return await start_pipeline(
        conn,
        PIPELINE_NAME,
        entity=f"story:{story_id}",
        args={"story_id": story_id, "account_id": account_id},
    )


@task(
    queue="story_downloads",
    name="demo.start_story_pipelines",
    pass_context=True,
    account_arg=None,
    rerun_safe=True,  # a demo: a rerun at worst starts a few more pipelines
)
async def start_story_pipelines(context: Any) -> dict[str, Any]:
    """DEMO ONLY: start ``PIPELINES_PER_RUN`` story pipelines (new story ids, random
    accounts) and defer ``AI_JOBS_PER_TASK_PER_RUN`` job per AI capsule task, in one
    transaction on a connection of the worker's pool."""
    import jobsys
    from jobsys.db.query import autocommit
    from jobsys.demo import store
    from jobsys.demo.run import AI_TASKS

    async with (
        pool.connection(context.app) as pooled,
        autocommit(pooled) as conn,
        conn.transaction(),
    ):
        story_ids = await store.next_story_ids(conn, PIPELINES_PER_RUN)
        accounts = await store.account_ids(conn, PIPELINES_PER_RUN, shuffled=True)
        pipeline_ids = [
            await start(conn, story_id, accounts[i % len(accounts)] if accounts else 1)
            for i, story_id in enumerate(story_ids)
        ]
        jobs: dict[str, int] = {}
        for name in AI_TASKS:
            media = [
                {"media_id": random.randint(1, 10**6)} for _ in range(AI_JOBS_PER_TASK_PER_RUN)
            ]
            jobs[name] = len(await jobsys.defer_many(name, media, connection=conn))
    return {"story_ids": story_ids, "pipeline_ids": pipeline_ids, "ai_jobs": jobs}
