"""One connection for an operator command: resolve the database, connect, check the schema."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from jobsys.db.connect import check_schema, connect, resolve

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings


@contextlib.asynccontextmanager
async def command_connection(
    settings: Settings, config: Callable[[], Config]
) -> AsyncIterator[Any]:
    """An autocommit, dict-row connection to the database at the code's schema head.
    ``config`` (the edge's loader) is asked only when the files may name the database:
    no URL given and a queues.yaml there."""
    loaded = None
    if settings.database_url is None and (settings.config_dir / "queues.yaml").exists():
        loaded = config()
    target = resolve(settings, loaded)
    async with connect(target.url) as conn:
        await check_schema(conn)
        yield conn
