"""Unique jobs: at most one job per key in the states that count. Pure.

A task declares ``unique_for="1h"`` (or ``defer --unique-for 1h`` asks for it once):
two jobs are the same when their task and their key are: by default all the args,
or only the named ones (``unique_keys=("account_id",)``). An existing job counts
when it is in an ACTIVE state the spec names (``waiting``, ``scheduled``,
``running``: whatever its age), or in a FINISHED state it names (default
``succeeded``) and was deferred within the period. A duplicate defer inserts
nothing and returns the existing job's id.

A unique key must be one of the job's arguments: a name the job is never deferred
with would read as null in every job's key, so jobs that differ only in their other
arguments would all be "the same" and all but the first dropped silently.
``@jobsys.task`` refuses a declared key that is not a parameter of the function
(``jobsys.tasks``); a key the job leaves out takes the parameter's default (omitting
``force=False`` is passing it); ``defer`` refuses a key that is neither passed nor a
parameter with a default (``jobsys.jobs.defer``), and so does the configuration for
fan-out entries (``jobsys.config.models.unique_key_problems``).

Enforcement is the database's (``jobsys.engine.inserts``): the insert takes a
transaction-level advisory lock on the key, looks for a job that counts, and inserts
(job and key row) only when there is none, all in one transaction, so two processes
on two hosts deferring the same key at once are serialised, never check-then-insert.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from jobsys.errors import UsageError
from jobsys.timespec import parse_duration

ACTIVE = ("waiting", "scheduled", "running")
FINISHED = ("succeeded", "failed", "cancelled", "aborted")
STATES = ACTIVE + FINISHED
DEFAULT_STATES = ("waiting", "scheduled", "running", "succeeded")
_NONE: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True)
class UniqueSpec:
    for_seconds: float
    #: The args that make two jobs the same (None: all of them).
    keys: tuple[str, ...] | None = None
    states: tuple[str, ...] = DEFAULT_STATES

    def key(self, task: str, args: dict[str, Any], defaults: Mapping[str, Any] = _NONE) -> str:
        """The job's unique key: a digest of the task and the key args. A key arg the
        job leaves out is its ``defaults`` value (the task function's default), so a
        job that omits ``force=False`` is the same as one that passes it."""
        chosen = args if self.keys is None else {k: args.get(k, defaults.get(k)) for k in self.keys}
        text = json.dumps([task, chosen], sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def counting_states(self) -> tuple[list[str], list[str]]:
        """(active states that count at any age, finished ones that count within the
        period); the engine maps them to its statuses (``waiting``/``scheduled`` are
        one status there, told apart by ``scheduled_at``)."""
        active = [s for s in self.states if s in ACTIVE]
        finished = [s for s in self.states if s in FINISHED]
        return active, finished


def unique_spec(
    for_: str | float | None,
    keys: Iterable[str] | None = None,
    states: Iterable[str] | None = None,
    *,
    where: str = "unique_for",
) -> UniqueSpec | None:
    """Validate the options (UsageError naming ``where``); None when not unique."""
    if for_ is None:
        if keys or states:
            raise UsageError(f"{where}: unique keys or states need a period (unique_for=1h).")
        return None
    if isinstance(for_, (int, float)) and not isinstance(for_, bool):
        seconds = float(for_)
    elif isinstance(for_, str):
        seconds = parse_duration(for_, where).total_seconds()
    else:
        raise UsageError(f"{where}: {for_!r} is not a duration (1h, 30m, or seconds).")
    if seconds <= 0:
        raise UsageError(f"{where}: the period must be above zero.")
    chosen_keys = tuple(keys) if keys else None
    for key in chosen_keys or ():
        if not isinstance(key, str) or not key:
            raise UsageError(f"{where}: unique keys are argument names; got {key!r}.")
    chosen_states = tuple(states) if states else DEFAULT_STATES
    unknown = [s for s in chosen_states if s not in STATES]
    if unknown:
        raise UsageError(f"{where}: {unknown[0]!r} is not a job state; use {', '.join(STATES)}.")
    return UniqueSpec(for_seconds=seconds, keys=chosen_keys, states=chosen_states)
