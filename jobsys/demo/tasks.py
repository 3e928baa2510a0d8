"""DEMO ONLY: the seed's job catalogue over synthetic accounts.

Simulated latency and a realistic mix of transient, authentication and runtime
failures, so that ``make run`` shows lanes busy, failures of each kind and issues
grouping them. Loaded only when no application module is configured.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable

from jobsys import AuthenticationError, TransientError, task

#: Probabilities of each simulated failure per job.
AUTH_FAILURE_RATE = 0.02
TRANSIENT_FAILURE_RATE = 0.04
RUNTIME_FAILURE_RATE = 0.01
LATENCY_SECONDS = (0.05, 0.4)


def _simulate(account_id: int, *, auth: bool = True) -> None:
    time.sleep(random.uniform(*LATENCY_SECONDS))
    roll = random.random()
    if auth and roll < AUTH_FAILURE_RATE:
        raise AuthenticationError(f"Instagram asks account {account_id} to log in again")
    if roll < AUTH_FAILURE_RATE + TRANSIENT_FAILURE_RATE:
        raise TransientError(f"rate limited while serving account {account_id}")
    if roll < AUTH_FAILURE_RATE + TRANSIENT_FAILURE_RATE + RUNTIME_FAILURE_RATE:
        raise KeyError("edge_followed_by")


def _account_task(
    name: str, queue: str, *, rerun_safe: bool, auth: bool = True
) -> Callable[[int], None]:
    """One of the seed's account tasks: ``demo.<name>`` on ``queue``, its work simulated
    (``auth=False``: a task that never needs the account's login)."""

    def run(account_id: int) -> None:
        _simulate(account_id, auth=auth)

    run.__name__ = run.__qualname__ = name
    return task(queue=queue, name=f"demo.{name}", rerun_safe=rerun_safe)(run)


#: Continuous account processing (the seed's EnqueueContinuousAccountProcessingJob).
process_account = _account_task("process_account", "sync", rerun_safe=True)
send_story_auto_replies = _account_task("send_story_auto_replies", "messages", rerun_safe=False)
feed_auto_engagement = _account_task("feed_auto_engagement", "engagements", rerun_safe=False)
scan_recent_profile_posts = _account_task(
    "scan_recent_profile_posts", "post_downloads", rerun_safe=True
)
sync_follow_graph = _account_task("sync_follow_graph", "sync", rerun_safe=True)
sync_avatar = _account_task("sync_avatar", "avatars", rerun_safe=True, auth=False)


@task(queue="profiles", name="demo.refresh_profile", rerun_safe=True)
async def refresh_profile(account_id: int) -> None:
    import asyncio

    import jobsys

    await asyncio.to_thread(_simulate, account_id)
    # The seed's profiles table changed: tell the operator screens (coalesced in a worker).
    await jobsys.publish("profiles_table_changed", {"profile_id": account_id})


@task(queue="maintenance", name="demo.purge_expired_post_media", rerun_safe=True)
def purge_expired_post_media() -> None:
    time.sleep(random.uniform(*LATENCY_SECONDS))


# --- AI capsule lanes: slower, and their transient failures name the AI service ----

AI_LATENCY_SECONDS = (0.3, 1.5)
AI_OUTAGE_RATE = 0.06


async def _simulate_ai(what: str, media_id: int, *, latency: tuple[float, float]) -> None:
    import asyncio

    from jobsys.demo import ai_service

    ai_service.raise_if_down(f"{what} of media {media_id}")  # the simulated outage
    await asyncio.sleep(random.uniform(*latency))
    roll = random.random()
    if roll < AI_OUTAGE_RATE:
        raise TransientError(
            f"AI service timed out during {what} of media {media_id}", service="ai"
        )
    if roll < AI_OUTAGE_RATE + RUNTIME_FAILURE_RATE:
        raise ValueError(f"{what}: unexpected tensor shape for media {media_id}")


@task(queue="ai", name="demo.ai_legacy_caption", rerun_safe=True)
async def ai_legacy_caption(media_id: int) -> None:
    await _simulate_ai("captioning", media_id, latency=AI_LATENCY_SECONDS)


@task(queue="ai_visual_queue", name="demo.ai_visual_tags", rerun_safe=True)
async def ai_visual_tags(media_id: int) -> None:
    await _simulate_ai("visual tagging", media_id, latency=AI_LATENCY_SECONDS)


@task(queue="ai_face_queue", name="demo.ai_face_match", rerun_safe=True)
async def ai_face_match(media_id: int, account_id: int | None = None) -> None:
    await _simulate_ai("face matching", media_id, latency=AI_LATENCY_SECONDS)


@task(queue="ai_ocr_queue", name="demo.ai_ocr", rerun_safe=True)
async def ai_ocr(media_id: int) -> None:
    await _simulate_ai("OCR", media_id, latency=AI_LATENCY_SECONDS)


@task(queue="ai_metadata_queue", name="demo.ai_metadata", rerun_safe=True)
async def ai_metadata(media_id: int) -> None:
    await _simulate_ai("metadata extraction", media_id, latency=(0.1, 0.5))


@task(queue="video_processing_queue", name="demo.process_video", rerun_safe=False)
async def process_video(media_id: int) -> None:
    await _simulate_ai("video transcoding", media_id, latency=(1.0, 3.0))


@task(queue="frame_generation", name="demo.generate_frames", rerun_safe=True)
async def generate_frames(media_id: int) -> None:
    await _simulate_ai("frame generation", media_id, latency=(0.5, 2.0))


# The demo's story/media pipeline lives beside these tasks and loads with them.
from jobsys.demo import pipelines as _story_pipeline  # noqa: E402, F401
