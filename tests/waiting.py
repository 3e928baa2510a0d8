"""The one way tests wait: poll a condition until it holds, with a deadline.

Prefer driving a pass directly (a periodic service's ``run_pass``, the scheduler's
``pass_on``) where the code allows it; wait only on what another process or thread
does. ``check`` returns something truthy when the wait is over (that value is
returned); the deadline's failure names ``what``.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")

#: How often a condition is polled (seconds).
POLL_SECONDS = 0.05


def wait_until(
    check: Callable[[], T], timeout: float = 10.0, what: str = "", *, interval: float = POLL_SECONDS
) -> T:
    """Poll ``check`` (blocking) until it returns something truthy; return it."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        time.sleep(interval)


async def wait_until_async(
    check: Callable[[], Any | Awaitable[Any]],
    timeout: float = 10.0,
    what: str = "",
    *,
    interval: float = POLL_SECONDS,
) -> Any:
    """:func:`wait_until` in an event loop: ``check`` may be a coroutine function, and
    the loop keeps running between polls."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or check}")
        await asyncio.sleep(interval)
