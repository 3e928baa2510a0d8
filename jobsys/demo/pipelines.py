"""DEMO ONLY: the story/media pipeline across the AI lanes.

Download the story on ``story_downloads``, then visual, face and OCR analysis in
parallel on their capsule lanes, then metadata once all three are done. Simulated
latency and a few transient failures of the AI service, so ``make run`` shows a
pipeline waiting, joining, failing and being retried. The steps are async so that
``jobsys pipelines cancel`` aborts a running step at once.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

from jobsys import TransientError, task
from jobsys.retry.pipeline_store import start_pipeline
from jobsys.retry.pipelines import pipeline, step

PIPELINE_NAME = "demo.story_media"
#: Probability that an AI step fails with a transient AI-service error.
AI_FAILURE_RATE = 0.05
LATENCY_SECONDS = (0.05, 0.5)


async def _work(story_id: int, *, ai: bool = False) -> None:
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
