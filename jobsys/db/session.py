"""One connection for an operator command: resolve the database, connect, check the schema."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from jobsys.db.connect import check_schema, connect, resolve

if TYPE_CHECKING:
    from jobsys.settings import Settings


@contextlib.asynccontextmanager
async def command_connection(settings: Settings) -> AsyncIterator[Any]:
    """An autocommit, dict-row connection to the database at the code's schema head."""
    config = None
    if settings.database_url is None and (settings.config_dir / "queues.yaml").exists():
        from jobsys.config import load

        config = load(settings.config_dir)
    target = resolve(settings, config)
    async with connect(target.url) as conn:
        await check_schema(conn)
        yield conn
