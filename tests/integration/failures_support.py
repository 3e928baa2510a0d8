"""Real failing tasks and a real Procrastinate worker for the failures tests."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg.rows import dict_row

from jobsys import AuthenticationError, TransientError, task
from jobsys.config import Config, load
from jobsys.errors import JobTimeoutError

CONFIG_DIR = Path(__file__).resolve().parents[2] / "config"


class HttpStatusError(Exception):
    def __init__(self, status_code: int) -> None:
        super().__init__(f"HTTP {status_code} from upstream")
        self.status_code = status_code


def _fail_deep(message: str) -> None:
    raise ValueError(message)


@task(queue="profiles", name="fx.auth")
def fx_auth(account_id: int) -> None:
    raise AuthenticationError(f"account {account_id} must log in again")


@task(queue="profiles", name="fx.transient")
def fx_transient(account_id: int) -> None:
    raise TransientError(f"rate limited for account {account_id}")


@task(queue="profiles", name="fx.runtime")
def fx_runtime(account_id: int) -> None:
    raise KeyError("edge_followed_by")


@task(queue="profiles", name="fx.http401")
def fx_http401(account_id: int) -> None:
    raise HttpStatusError(401)


@task(queue="profiles", name="fx.http503")
def fx_http503(account_id: int) -> None:
    raise HttpStatusError(503)


@task(queue="profiles", name="fx.connection")
def fx_connection(account_id: int) -> None:
    raise ConnectionResetError("connection reset by peer")


@task(queue="ai", name="fx.timeout")
async def fx_timeout(account_id: int) -> None:
    try:
        await asyncio.wait_for(asyncio.sleep(5), timeout=0.01)
    except TimeoutError as exc:
        raise JobTimeoutError("ran past its 0.01 s timeout") from exc


@task(queue="ai", name="fx.ai_call")
async def fx_ai_call(account_id: int) -> None:
    raise TransientError("AI service refused the connection", service="ai")


@task(queue="profiles", name="fx.same", profile_arg="profile")
def fx_same(account_id: int, item: int, profile: str | None = None) -> None:
    _fail_deep(f"item {item} of account {account_id} is broken")


@task(queue="profiles", name="fx.distinct")
def fx_distinct(account_id: int, word: str) -> None:
    _fail_deep(f"cannot parse {word.upper()} section")


@task(queue="profiles", name="fx.canary")
def fx_canary(account_id: int, login: dict[str, Any]) -> None:
    token = login["logins"][0]["token"]
    raise ValueError(f"login rejected, token {token} is not valid")


@task(queue="profiles", name="fx.ok")
def fx_ok(account_id: int) -> None:
    return None


@pytest.fixture(autouse=False)
def spool_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Capture spools under a scratch JOBSYS_HOME, never the repository's."""
    home = tmp_path / "home"
    monkeypatch.setenv("JOBSYS_HOME", str(home))
    return home


async def replay(db_url: str, config: Config, home: Path) -> tuple[int, int]:
    from jobsys.failures.capture import spool_directory
    from jobsys.failures.reconcile import replay_spool
    from jobsys.failures.spool import Spool

    app = build_app(db_url, config, max_size=2)
    async with app.open_async():
        return await replay_spool(app.connector.pool, config, Spool(spool_directory(home)))


def repo_config(**queues_updates: Any) -> Config:
    config = load(CONFIG_DIR)
    if queues_updates:
        config = dataclasses.replace(config, queues=config.queues.model_copy(update=queues_updates))
    return config


async def defer(app: Any, jobs: Iterable[tuple[str, dict[str, Any]]]) -> list[int]:
    ids = []
    for name, kwargs in jobs:
        ids.append(
            await app.configure_task(
                name=name, queue=app.tasks[name].queue if name in app.tasks else "profiles"
            ).defer_async(**kwargs)
        )
    return ids


async def run_worker(
    app: Any,
    config: Config,
    *,
    lane: str = "base",
    concurrency: int = 1,
    queues: list[str] | None = None,
    name: str = "w",
) -> None:
    from jobsys.app import worker_middlewares

    await app.run_worker_async(
        queues=queues,
        wait=False,
        concurrency=concurrency,
        name=name,
        install_signal_handlers=False,
        worker_middleware=worker_middlewares(config),
        additional_context={"lane": lane},
        fetch_job_polling_interval=0.1,
    )


def build_app(db_url: str, config: Config, max_size: int = 10) -> Any:
    from jobsys.lanes.execution import build_engine_app

    return build_engine_app(db_url, config=config, max_size=max_size)


def rows(db_url: str, sql: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(db_url, row_factory=dict_row) as conn:
        return list(conn.execute(sql, params).fetchall())
