"""Seeding and serving for the web console tests: real failures from a real worker,
a pipeline, a fan-out run, and the console on a real socket (uvicorn in a thread)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime

import failures_support as fx

from jobsys.settings import Settings
from jobsys.web.auth import Credentials

CANARY = "canary-web-9e1d-SECRET"
WORKER_ID = "web-test-host:4242:1"


@dataclass
class Seeded:
    failures: dict[str, int] = field(default_factory=dict)  # label -> failure id
    jobs: dict[str, int] = field(default_factory=dict)
    issues: dict[str, int] = field(default_factory=dict)
    pipeline: int = 0
    fanout_run: int = 0


async def _seed(settings: Settings, db_url: str) -> Seeded:
    from jobsys.config.application import load_config
    from jobsys.db.connect import connect
    from jobsys.demo import pipelines
    from jobsys.demo.run import seed as demo_seed
    from jobsys.lanes.store import register_process
    from jobsys.schedule.service import run_entry

    config = fx.repo_config()
    app = fx.build_app(db_url, config)
    args = {"account_id": 9, "login": {"logins": [{"user": "ana", "token": CANARY}]}}
    async with app.open_async():
        ids = await fx.defer(
            app,
            [
                ("fx.canary", args),
                ("fx.auth", {"account_id": 41}),
                ("fx.runtime", {"account_id": 7}),
                ("fx.transient", {"account_id": 8}),
            ],
        )
        await fx.run_worker(app, config, queues=["profiles"])
        waiting = await fx.defer(app, [("fx.ok", {"account_id": 5, "api_token": CANARY})])
    seeded = Seeded()
    seeded.jobs = {"canary": ids[0], "auth": ids[1], "runtime": ids[2], "waiting": waiting[0]}
    for label, job_id in zip(("canary", "auth", "runtime", "transient"), ids, strict=True):
        (row,) = fx.rows(
            db_url, "SELECT id, issue_id FROM jobsys_failures WHERE job_id = %s", (job_id,)
        )
        seeded.failures[label] = row["id"]
        seeded.issues[label] = row["issue_id"]
    async with connect(db_url) as conn:
        seeded.pipeline = await pipelines.start(conn, 501, 9)
        await register_process(
            conn,
            {
                "id": WORKER_ID,
                "hostname": "web-test-host",
                "pid": 4242,
                "lanes": ["base", "ai"],
                "concurrency": json.dumps({"base": 10, "ai": 2}),
                "started_at": datetime.now(UTC),
            },
        )
    await demo_seed(settings, load_config(settings, with_tasks=False), 20)
    run = await run_entry(settings, load_config(settings), "continuous_account_processing")
    seeded.fanout_run = run["run_id"]
    return seeded


def pages(seeded: Seeded) -> list[str]:
    f, j = seeded.failures, seeded.jobs
    return [
        "/admin/background_jobs",
        "/admin/background_jobs/failures",
        "/admin/background_jobs/failures?kind=authentication",
        "/admin/background_jobs/failures?group_by=queue",
        f"/admin/background_jobs/failures/{f['canary']}",
        f"/admin/background_jobs/failures/{f['auth']}",
        "/admin/jobs",
        "/admin/jobs?status=failed&queue=profiles",
        f"/admin/jobs/{j['canary']}",
        f"/admin/jobs/{j['waiting']}",
        "/admin/issues",
        "/admin/issues?status=all",
        f"/admin/issues/{seeded.issues['canary']}",
        "/admin/pipelines",
        f"/admin/pipelines/{seeded.pipeline}",
        "/admin/queues",
        "/admin/workers",
        f"/admin/workers/{WORKER_ID}",
        "/admin/schedule",
        "/admin/fanout",
        f"/admin/fanout/{seeded.fanout_run}",
        f"/admin/retry?failure={f['runtime']}",
        f"/admin/retry?issue={seeded.issues['auth']}",
        "/admin/retry?all=1&kind=runtime",
    ]


def seed(settings: Settings, db_url: str) -> Seeded:
    return asyncio.run(_seed(settings, db_url))


@contextlib.contextmanager
def serve(settings: Settings, db_url: str, credentials: Credentials | None = None) -> Iterator[str]:
    """The console on 127.0.0.1 and a free port; yields its base URL."""
    from jobsys.web.app import create_app
    from jobsys.web.server import bind, run_in_thread

    app = create_app(settings, credentials or Credentials(), database_url=db_url)
    serving = run_in_thread(app, bind("127.0.0.1", 0))
    try:
        yield serving.url
    finally:
        serving.stop()
