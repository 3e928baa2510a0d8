"""Shared CLI plumbing: the resolved settings on the Typer context, and the sync edge."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

import typer

from jobsys.settings import Settings

T = TypeVar("T")


def settings(ctx: typer.Context) -> Settings:
    obj = ctx.find_root().obj
    assert isinstance(obj, Settings), "the root callback sets the settings"
    return obj


def run(coro: Coroutine[Any, Any, T]) -> T:
    """The one sync edge: run an async service function to completion."""
    return asyncio.run(coro)
