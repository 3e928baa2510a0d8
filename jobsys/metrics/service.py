"""``jobsys metrics``: collect the Prometheus exposition once from the CLI."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.settings import Settings


async def exposition(settings: Settings, config: Config) -> str:
    from jobsys.db.connect import check_schema, connect, resolve
    from jobsys.metrics import exposition as metrics

    async with connect(resolve(settings, config).url) as conn:
        await check_schema(conn)
        return metrics.render(await metrics.collect(conn, config))
