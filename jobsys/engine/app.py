"""Building a Procrastinate ``App``: its connector (see :mod:`.pool`) and its tasks.

``jobsys.lanes.execution`` decides which tasks run and how (timeouts, retry policy); this module
only hands them to Procrastinate.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from procrastinate import App


def build_app(url: str, *, min_size: int = 1, max_size: int = 10) -> App:
    """A Procrastinate App on ``url``, no task attached yet.

    Its pool hands out autocommit connections (see :mod:`jobsys.engine.pool`): wrap
    multi-statement work in ``async with conn.transaction():``.
    """
    import procrastinate

    from jobsys.engine import pool

    return procrastinate.App(connector=pool.connector(url, min_size=min_size, max_size=max_size))


def register_task(
    app: Any,
    func: Callable[..., Any],
    *,
    name: str,
    queue: str,
    priority: int,
    pass_context: bool,
    retry: Any,
) -> None:
    """Attach ``func`` to ``app`` as task ``name``."""
    app.task(name=name, queue=queue, priority=priority, pass_context=pass_context, retry=retry)(
        func
    )


@contextlib.asynccontextmanager
async def connection(app: Any) -> AsyncIterator[Any]:
    """A connection of ``app``'s pool (autocommit)."""
    async with app.connector.pool.connection() as conn:
        yield conn
