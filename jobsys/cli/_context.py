"""Shared CLI plumbing: the resolved settings on the Typer context, and the sync edge."""

from __future__ import annotations

import asyncio
import shutil
import sys
from collections.abc import Coroutine
from pathlib import Path
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


def jobsys_command() -> str:
    """How to type ``jobsys`` in another terminal: ``jobsys`` when that is what PATH
    finds, else the path of this installation's script (``.venv/bin/jobsys`` after
    ``make run``, which does not activate the virtualenv)."""
    script = Path(sys.executable).with_name("jobsys")
    found = shutil.which("jobsys")
    if not script.exists() or (found and Path(found).resolve() == script.resolve()):
        return "jobsys"
    try:
        return str(script.relative_to(Path.cwd()))
    except ValueError:
        return str(script)
