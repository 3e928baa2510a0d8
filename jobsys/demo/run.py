"""DEMO ONLY: ``jobsys demo seed`` and ``jobsys demo run``.

``run`` starts the simulated AI service (``jobsys.demo.ai_service``: an outage 3
minutes in, then 2 minutes down every 10), seeds the accounts if needed, defers a
burst of jobs across every lane (enough that failures of each kind show up within a
minute), then runs the worker on all lanes until Ctrl-C. The schedule keeps it busy
afterwards: fan-outs over ``demo_accounts``, and ``demo.start_story_pipelines``
every 2 minutes (story pipelines and AI capsule jobs).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from jobsys.config.application import DEMO_MODULE

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.lanes.runtime import RuntimeResult
    from jobsys.settings import Settings

logger = logging.getLogger("jobsys.demo")

DEFAULT_ACCOUNTS = 200
#: Jobs per account task in the initial burst, and per AI task.
BURST_PER_ACCOUNT_TASK = 40
BURST_PER_AI_TASK = 12
#: Story pipelines (download, then visual/face/OCR in parallel, then metadata) started.
BURST_PIPELINES = 10
ACCOUNT_TASKS = (
    "demo.process_account",
    "demo.send_story_auto_replies",
    "demo.feed_auto_engagement",
    "demo.scan_recent_profile_posts",
    "demo.sync_follow_graph",
    "demo.sync_avatar",
    "demo.refresh_profile",
)
AI_TASKS = (
    "demo.ai_legacy_caption",
    "demo.ai_visual_tags",
    "demo.ai_face_match",
    "demo.ai_ocr",
    "demo.ai_metadata",
    "demo.process_video",
    "demo.generate_frames",
)


def with_demo(settings: Settings) -> Settings:
    """The settings the demo runs with: the demo's tasks unless an application is named
    (the edge loads the configuration of these)."""
    from dataclasses import replace

    return settings if settings.app_modules else replace(settings, app_modules=(DEMO_MODULE,))


async def seed(
    settings: Settings, config: Config, accounts: int = DEFAULT_ACCOUNTS
) -> dict[str, Any]:
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.demo import store

    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        return await store.seed(conn, accounts)


async def burst(
    settings: Settings, config: Config, accounts: int = DEFAULT_ACCOUNTS
) -> dict[str, Any]:
    """Seed if needed, then defer the initial burst of demo jobs; returns counts.
    ``config``: of :func:`with_demo` settings, with the application's tasks."""
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.demo import store
    from jobsys.jobs import defer

    seeded = await seed(settings, config, accounts)
    deferred: dict[str, int] = {}
    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        ids = await store.account_ids(conn, BURST_PER_ACCOUNT_TASK)
        for task in ACCOUNT_TASKS:
            planned = defer.plan(config, task, [{"account_id": i} for i in ids], many=True)
            deferred[task] = len(await defer.insert(conn, planned))
        for task in AI_TASKS:
            media = [{"media_id": random.randint(1, 10**6)} for _ in range(BURST_PER_AI_TASK)]
            planned = defer.plan(config, task, media, many=True)
            deferred[task] = len(await defer.insert(conn, planned))
        from jobsys.demo import pipelines

        for story_id in await store.next_story_ids(conn, BURST_PIPELINES):
            await pipelines.start(conn, story_id, ids[story_id % len(ids)] if ids else 1)
        deferred["demo.story_pipelines"] = BURST_PIPELINES
    return {**seeded, "deferred": deferred}


async def run(
    settings: Settings,
    config: Config,
    accounts: int = DEFAULT_ACCOUNTS,
    *,
    announce: Callable[[dict[str, Any]], None] | None = None,
) -> RuntimeResult:
    """Start the simulated AI service, seed, burst, then run every lane until stopped.
    ``settings`` are :func:`with_demo`'s; ``config`` theirs, with the application's tasks.

    ``announce`` sees the burst's counts and ``ai_service``: what the simulated AI
    service does (or why it is not simulated: its port is taken).
    """
    from jobsys.app import run_worker
    from jobsys.demo import ai_service

    simulated = ai_service.start_for(config)
    try:
        result = await burst(settings, config, accounts)
        result["ai_service"] = {
            "simulated": simulated.service is not None,
            "message": simulated.message,
        }
        if announce is not None:
            announce(result)
        return await run_worker(settings)
    finally:
        ai_service.stop_active()
