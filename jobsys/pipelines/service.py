"""Pipelines for the operator CLI: list, show, cancel (validation, connection, schema)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from jobsys.errors import UsageError
from jobsys.pipelines import store as pipeline_store
from jobsys.pipelines.definitions import PIPELINE_STATUSES
from jobsys.timespec import parse_time

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings

DEFAULT_LIST_LIMIT = 100


@asynccontextmanager
async def _connection(settings: Settings, config: Config) -> AsyncIterator[Any]:
    from jobsys.db.connect import check_schema, connect, resolve

    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        yield conn


async def list_pipelines(
    settings: Settings,
    config: Config,
    *,
    status: str | None,
    since: str | None,
    limit: int = DEFAULT_LIST_LIMIT,
) -> list[dict[str, Any]]:
    if status is not None and status not in PIPELINE_STATUSES:
        raise UsageError(
            f"--status {status!r} is not a pipeline status.",
            hint=f"Use one of {', '.join(PIPELINE_STATUSES)}.",
        )
    if limit < 1:
        raise UsageError("--limit must be at least 1.")
    start = parse_time(since, "--since", datetime.now(UTC)) if since else None
    async with _connection(settings, config) as conn:
        return await pipeline_store.list_pipelines(conn, status=status, since=start, limit=limit)


async def show_pipeline(settings: Settings, config: Config, pipeline_id: int) -> dict[str, Any]:
    """The pipeline and its steps; its args redacted (they are every step's job args)."""
    from jobsys.failures.redaction import Redactor

    async with _connection(settings, config) as conn:
        data = await pipeline_store.show_pipeline(conn, pipeline_id)
    data["args"] = Redactor.for_config(config).redact(data["args"])
    return data


async def cancel_pipeline(settings: Settings, config: Config, pipeline_id: int) -> dict[str, Any]:
    async with _connection(settings, config) as conn:
        return await pipeline_store.cancel_pipeline(conn, pipeline_id, actor=settings.operator)
