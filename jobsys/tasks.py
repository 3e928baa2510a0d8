"""The task registry and the public ``@task`` decorator.

A task is a plain function (sync or async) plus a :class:`TaskSpec`: its stable
name, its queue, its timeout, its retry policy, which arguments carry the account
and profile context, and whether it is safe to re-run after a crash. Registration
is import-time and process-wide; ``jobsys.lanes.execution`` turns specs into Procrastinate
tasks.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar, overload

from jobsys.errors import UsageError, did_you_mean
from jobsys.jobs.unique import UniqueSpec, unique_spec

F = TypeVar("F", bound=Callable[..., Any])


#: A job's priority is a PostgreSQL ``integer`` (``procrastinate_jobs.priority``).
PRIORITY_MIN, PRIORITY_MAX = -(2**31), 2**31 - 1


@dataclass(frozen=True)
class TaskSpec:
    name: str
    func: Callable[..., Any]
    queue: str
    timeout_seconds: float | None = None
    #: Automatic attempts after the first for runtime failures (None: config default).
    max_attempts: int | None = None
    #: Automatic attempts after the first for transient failures (None: config default).
    transient_max_attempts: int | None = None
    account_arg: str | None = "account_id"
    profile_arg: str | None = "profile_id"
    rerun_safe: bool = False
    service: str | None = None
    priority: int = 0
    pass_context: bool = False
    #: At most one such job per key in the states that count (``unique_for``).
    unique: UniqueSpec | None = None
    #: Flow limits declared on the task (as ``throttle`` in queues.yaml, which wins):
    #: at most ``rate`` starts (``"30/m"``) and ``concurrency`` running, per value of
    #: argument ``per_key`` when given. Checked by ``jobsys config check``.
    rate: str | None = None
    concurrency: int | None = None
    per_key: str | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.func)

    @property
    def parameters(self) -> Parameters | None:
        """The arguments its jobs may be deferred with (None: the signature cannot be
        read, so anything goes)."""
        return parameters(self.func, self.pass_context)


@dataclass(frozen=True)
class Parameters:
    """What a task function's signature says about its jobs' arguments."""

    #: Those a job may pass by name (the context's, with ``pass_context``, is not one).
    names: tuple[str, ...]
    #: Those with a default -> the default (what an omitted one is in the function).
    defaults: Mapping[str, Any]
    #: It takes ``**kwargs``: any name may be passed.
    any_name: bool


@functools.lru_cache(maxsize=1024)
def parameters(func: Callable[..., Any], pass_context: bool) -> Parameters | None:
    """``func``'s :class:`Parameters`, read once (None: no readable signature)."""
    try:
        signature = inspect.signature(func)
    except (TypeError, ValueError):
        return None
    given = list(signature.parameters.values())
    if pass_context and given and given[0].kind is not inspect.Parameter.VAR_KEYWORD:
        given = given[1:]  # the context, passed positionally by the lane
    by_name = [
        p
        for p in given
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    ]
    return Parameters(
        names=tuple(p.name for p in by_name),
        defaults={p.name: p.default for p in by_name if p.default is not p.empty},
        any_name=any(p.kind is inspect.Parameter.VAR_KEYWORD for p in given),
    )


def explain_misfit(func: Callable[..., Any], pass_context: bool, names: Iterable[str]) -> str:
    """Why jobs with arguments of these names do not fit ``func``: every unknown
    argument (did you mean) and every missing one ("": they fit, or the signature
    cannot be read). Used by ``defer`` on its error path (binding names only the first
    problem, so a misspelt argument read as just the missing one) and by ``config
    check`` for the schedule's entries."""
    params = parameters(func, pass_context)
    if params is None:
        return ""
    given = list(names)
    unknown = [] if params.any_name else [n for n in given if n not in params.names]
    left = [n for n in params.names if n not in given]
    missing = [n for n in left if n not in params.defaults]
    parts = [f"unknown argument {n!r}{did_you_mean(n, left)}" for n in unknown]
    if missing:
        parts.append("missing " + ", ".join(repr(n) for n in missing))
    return "; ".join(parts)


def _check_unique_keys(spec: TaskSpec) -> None:
    """A declared unique key must be a parameter of the function: any other name is
    null in every job's key (a typo), so all jobs but the first would be dropped as
    "the same", on every path that defers the task (``jobsys.jobs.unique``)."""
    params = spec.parameters
    keys = spec.unique.keys if spec.unique is not None else None
    if not keys or params is None or params.any_name:
        return
    for key in keys:
        if key not in params.names:
            shown = ", ".join(params.names) or "none"
            raise UsageError(
                f"task {spec.name!r}: unique_keys: {key!r} is not a parameter of "
                f"{spec.func.__qualname__}({shown}){did_you_mean(key, params.names)}",
                hint="A unique key names an argument of the task's jobs; any other name "
                "would give every job the same key, and all but the first would be dropped.",
            )


_REGISTRY: dict[str, TaskSpec] = {}


class DuplicateTaskError(ValueError):
    pass


def registry() -> dict[str, TaskSpec]:
    """All registered tasks by name (a copy)."""
    return dict(_REGISTRY)


def get(name: str) -> TaskSpec | None:
    return _REGISTRY.get(name)


def unregistered_notes(name: str | None) -> list[str]:
    """A note when ``name`` (a ``--task`` filter) names no registered task: a typo must
    not read as "nothing matches". A note, not an error: jobs and failures of a task
    since removed stay findable."""
    if name is None or name in _REGISTRY:
        return []
    return [f"no task {name!r} is registered{did_you_mean(name, _REGISTRY)}"]


def unknown_arg_notes(args: Iterable[str]) -> list[str]:
    """A note per ``--arg KEY=VALUE`` filter whose key (its first part, before a dot)
    no registered task takes: a misspelt key matches nothing, and "0 jobs to cancel"
    must not read as "already done". A note, not an error (jobs of a task since
    removed stay findable); nothing is said when an application's task takes
    ``**kwargs`` (jobsys's own periodic ones take the tick's, not filters' keys)."""
    names: set[str] = set()
    for spec in _REGISTRY.values():
        params = spec.parameters
        if params is None or (params.any_name and not spec.name.startswith("jobsys.")):
            return []
        names.update(params.names)
    notes = []
    for arg in args:
        key = arg.partition("=")[0].strip().split(".")[0]
        if key and key not in names:
            notes.append(
                f"--arg {arg!r}: no task takes an argument {key!r}{did_you_mean(key, names)}; "
                "only jobs of a task since removed can match it"
            )
    return notes


def register(spec: TaskSpec) -> TaskSpec:
    existing = _REGISTRY.get(spec.name)
    if existing is not None and existing.func is not spec.func:
        raise DuplicateTaskError(f"two tasks are named {spec.name!r}; give one an explicit name=")
    _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a task (tests use this to simulate a task that no longer exists)."""
    _REGISTRY.pop(name, None)


def default_name(func: Callable[..., Any]) -> str:
    return f"{func.__module__}.{func.__qualname__}"


@overload
def task(func: F) -> F: ...
@overload
def task(
    *,
    queue: str = "default",
    name: str | None = None,
    timeout: float | None = None,
    max_attempts: int | None = None,
    transient_max_attempts: int | None = None,
    account_arg: str | None = "account_id",
    profile_arg: str | None = "profile_id",
    rerun_safe: bool = False,
    service: str | None = None,
    priority: int = 0,
    pass_context: bool = False,
    unique_for: str | float | None = None,
    unique_keys: tuple[str, ...] | None = None,
    unique_states: tuple[str, ...] | None = None,
    rate: str | None = None,
    concurrency: int | None = None,
    per_key: str | None = None,
) -> Callable[[F], F]: ...
def task(
    func: F | None = None,
    *,
    queue: str = "default",
    name: str | None = None,
    timeout: float | None = None,
    max_attempts: int | None = None,
    transient_max_attempts: int | None = None,
    account_arg: str | None = "account_id",
    profile_arg: str | None = "profile_id",
    rerun_safe: bool = False,
    service: str | None = None,
    priority: int = 0,
    pass_context: bool = False,
    unique_for: str | float | None = None,
    unique_keys: tuple[str, ...] | None = None,
    unique_states: tuple[str, ...] | None = None,
    rate: str | None = None,
    concurrency: int | None = None,
    per_key: str | None = None,
) -> F | Callable[[F], F]:
    """Declare a jobsys task.

    ``queue`` must be a queue of ``config/queues.yaml`` (checked by ``jobsys config
    check`` and at worker start). ``timeout`` defaults to the lane's. ``rerun_safe``
    says whether the reaper may re-queue the job after its worker died mid-run; if
    False such jobs fail with reason ``worker_lost`` for a human to decide.
    ``unique_for`` (``"1h"``) makes a defer of the same task and key (all args, or
    ``unique_keys``) while one counts (``unique_states``, default waiting, scheduled,
    running, and succeeded within the period) return that job instead
    (``jobsys.jobs.unique``); each of ``unique_keys`` must be a parameter of the function
    (UsageError here, unless it takes ``**kwargs``). ``rate`` (``"30/m"``),
    ``concurrency`` and ``per_key`` (an argument's name) limit how fast and how many of
    the task's jobs start, across every worker, as ``throttle`` in queues.yaml does (an
    entry there for the task wins).
    """
    unique = unique_spec(unique_for, unique_keys, unique_states, where="unique_for")
    if isinstance(priority, bool) or not isinstance(priority, int):
        raise UsageError(f"priority: {priority!r} must be an integer")
    if not PRIORITY_MIN <= priority <= PRIORITY_MAX:
        # Refused here, not by the database at the first defer ("internal error").
        raise UsageError(
            f"priority: {priority} is out of range: a priority is from {PRIORITY_MIN} to "
            f"{PRIORITY_MAX} (a PostgreSQL integer)"
        )

    def decorate(f: F) -> F:
        spec = TaskSpec(
            name=name or default_name(f),
            func=f,
            queue=queue,
            timeout_seconds=timeout,
            max_attempts=max_attempts,
            transient_max_attempts=transient_max_attempts,
            account_arg=account_arg,
            profile_arg=profile_arg,
            rerun_safe=rerun_safe,
            service=service,
            priority=priority,
            pass_context=pass_context,
            unique=unique,
            rate=rate,
            concurrency=concurrency,
            per_key=per_key,
        )
        _check_unique_keys(spec)
        register(spec)
        f.jobsys_task = spec  # type: ignore[attr-defined]
        return f

    if func is not None:
        return decorate(func)
    return decorate
