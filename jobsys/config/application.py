"""Loading the configuration together with the application it configures.

Application modules come from ``--app``/``JOBSYS_APP``, else ``app.modules`` in
``queues.yaml``, else the bundled demo. jobsys's own maintenance tasks are always
loaded (``BUILTIN_MODULES``). :func:`load_config` imports them, then validates both
files and every task reference at once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from jobsys import tasks as task_registry
from jobsys.config.loader import Config, display_path
from jobsys.config.loader import load as load_config_files
from jobsys.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from pathlib import Path

    from jobsys.config.models import QueuesFile, ScheduleFile
    from jobsys.config.yamlfile import LocatedDocument
    from jobsys.settings import Settings

DEMO_MODULE = "jobsys.demo.tasks"
#: jobsys's own tasks (maintenance, health checks, automatic retry, fan-out batches).
BUILTIN_MODULES: tuple[str, ...] = (
    "jobsys.lanes.reap_task",
    "jobsys.schedule.tasks",
    "jobsys.retry.auto",
    "jobsys.issues.tasks",
)


def app_modules(settings: Settings, config: Config | None) -> tuple[str, ...]:
    if settings.app_modules:
        return settings.app_modules
    if config is not None and config.queues.app.modules:
        return config.queues.app.modules
    return (DEMO_MODULE,)


def _not_on_path(name: str, exc: Exception) -> str:
    """The hint for a module Python cannot find at all: ``jobsys`` (the installed
    script) does not look in the current folder, so ``myapp.py`` beside ``config/``
    is not found until it is on PYTHONPATH or installed."""
    if not isinstance(exc, ModuleNotFoundError) or exc.name is None:
        return ""
    if not (name == exc.name or name.startswith(exc.name + ".")):
        return ""  # the module was found; something it imports is missing
    return (
        "; the module must be importable by jobsys's Python, which does not look in the "
        "current folder: install it in that virtualenv or set PYTHONPATH (PYTHONPATH=. jobsys ...)"
    )


def import_modules(modules: tuple[str, ...]) -> list[str]:
    """Import task modules; return a problem line per module that fails."""
    problems = []
    for name in (*BUILTIN_MODULES, *modules):
        try:
            importlib.import_module(name)
        except task_registry.DuplicateTaskError as exc:
            problems.append(f"app module {name!r}: {exc}")
        except Exception as exc:
            problems.append(
                f"app module {name!r} cannot be imported: {type(exc).__name__}: {exc} "
                f"(check --app / JOBSYS_APP / app.modules in queues.yaml{_not_on_path(name, exc)})"
            )
    return problems


def task_problems(
    directory: Path,
    schedule: ScheduleFile,
    known_queues: set[str] | None,
    schedule_doc: LocatedDocument | None,
    queues: QueuesFile | None = None,
    queues_doc: LocatedDocument | None = None,
) -> list[str]:
    """Tasks naming unknown queues (when the queues are known), schedule entries naming
    unknown tasks, flow limits keyed by an argument their tasks do not take."""
    registry = task_registry.registry()
    problems = []
    for spec in sorted(registry.values(), key=lambda s: s.name):
        if known_queues is not None and spec.queue not in known_queues:
            problems.append(
                f"task {spec.name!r}: unknown queue {spec.queue!r} "
                f"(queues are declared in {display_path(directory / 'queues.yaml')})"
            )
        problems.extend(_throttle_problems(spec))
    if queues is not None:
        problems.extend(_per_key_problems(directory, queues, queues_doc))
    where = display_path(directory / "schedule.yaml")
    for key, task_name in _task_refs(schedule, schedule_doc):
        if task_name not in registry:
            hint = did_you_mean(task_name, registry)
            line = schedule_doc.line_of(key) if schedule_doc else 1
            problems.append(f"{where}:{line}: {'.'.join(key)}: unknown task {task_name!r}{hint}")
    problems.extend(_item_unique_key_problems(where, schedule, schedule_doc))
    return problems


def schedule_args_problems(config: Config) -> list[str]:
    """``config check``'s problems with the schedule's ``args``: an entry whose jobs do
    not fit its task (:func:`_entry_args_problems`). Checked by the deploy gate only: a
    worker still starts on such a schedule (the entry's jobs fail, each a failure row),
    as it did before the check existed."""
    from jobsys.config import yamlfile
    from jobsys.config.loader import SCHEDULE_FILE

    path = config.directory / SCHEDULE_FILE
    try:
        doc: LocatedDocument | None = yamlfile.read(path)
    except (yamlfile.YamlProblem, OSError):  # read moments ago; lines are a nicety
        doc = None
    return _entry_args_problems(display_path(path), config.schedule, doc)


def _entry_args_problems(
    where: str, schedule: ScheduleFile, schedule_doc: LocatedDocument | None
) -> list[str]:
    """An entry's jobs must fit its task's signature (a fan-out's item jobs: its
    ``args`` and ``item_arg``), as ``jobsys defer`` checks its own: otherwise a typo
    in ``args`` passes the deploy's ``config check`` and every tick's job fails."""
    from jobsys.config.models import item_arg_names

    problems = []
    for name, entry in schedule.entries.items():
        fanout = entry.fanout
        path: tuple[str, ...]
        if fanout is not None:
            task, names = fanout.task, item_arg_names(fanout.args, fanout.item_arg)
            spec = task_registry.get(task)
            params = spec.parameters if spec is not None else None
            item_arg_unknown = (
                params is not None and not params.any_name and fanout.item_arg not in params.names
            )
            key = "item_arg" if item_arg_unknown else "args" if fanout.args else "task"
            path = ("entries", name, "fanout", key)
        elif entry.task is not None:
            task, names = entry.task, set(entry.args)
            path = ("entries", name, "args" if entry.args else "task")
        else:
            continue
        spec = task_registry.get(task)
        if spec is None:
            continue  # reported as an unknown task
        problem = task_registry.explain_misfit(spec.func, spec.pass_context, sorted(names))
        if problem:
            line = schedule_doc.line_of(path) if schedule_doc else 1
            problems.append(
                f"{where}:{line}: {'.'.join(path)}: its jobs do not fit task {task}: {problem}"
            )
    return problems


def _item_unique_key_problems(
    where: str, schedule: ScheduleFile, schedule_doc: LocatedDocument | None
) -> list[str]:
    """An entry's jobs are unique by their task's declared ``unique_keys`` (a fan-out's,
    when it has no ``unique_for`` of its own; its own ``unique_keys`` are checked with
    the file): each must be one of the jobs' arguments (a fan-out's item jobs:
    ``item_arg`` and ``args``), or a parameter with a default, which the key then takes."""
    from jobsys.config.models import item_arg_names, unique_key_problems

    problems = []
    for name, entry in schedule.entries.items():
        fanout = entry.fanout
        key: tuple[str, ...]
        if fanout is not None and fanout.unique_for is None:
            task, key, of = fanout.task, ("entries", name, "fanout", "task"), "the item jobs'"
            names = item_arg_names(fanout.args, fanout.item_arg)
        elif fanout is None and entry.task is not None:
            task, key, of = entry.task, ("entries", name, "task"), "the entry's"
            names = set(entry.args)
        else:
            continue
        spec = task_registry.get(task)
        keys = spec.unique.keys if spec is not None and spec.unique is not None else None
        if spec is None or not keys:
            continue
        params = spec.parameters
        defaults = params.defaults if params is not None else {}
        of += " arguments" + (" or the task's parameters with a default" if defaults else "")
        line = schedule_doc.line_of(key) if schedule_doc else 1
        for problem in unique_key_problems(keys, {*names, *defaults}, of=of):
            problems.append(
                f"{where}:{line}: {'.'.join(key)}: task {task!r}'s unique_keys: {problem}"
            )
    return problems


def _per_key_problems(
    directory: Path, queues: QueuesFile, queues_doc: LocatedDocument | None
) -> list[str]:
    """A ``throttle`` entry's ``per_key`` is an argument of the tasks it limits (the
    task's, or at least one task of the queue): a misspelt key is in no job's args, so
    every job would share the one key of "argument missing", and a limit meant per
    account would hold the whole queue to it. Tasks whose signature cannot be read or
    that take ``**kwargs`` are not judged."""
    registry = task_registry.registry()
    problems = []
    where = display_path(directory / "queues.yaml")
    for name, throttle in queues.throttle.items():
        if throttle.per_key is None:
            continue
        if name in registry:
            specs, of = [registry[name]], f"task {name!r} does not take"
        else:
            specs = [s for s in registry.values() if s.queue == name]
            of = f"no task of queue {name!r} takes"
        params = [s.parameters for s in specs]
        if not params or any(p is None or p.any_name for p in params):
            continue
        taken = {n for p in params if p is not None for n in p.names}
        if throttle.per_key in taken:
            continue
        path = ("throttle", name, "per_key")
        line = queues_doc.line_of(path) if queues_doc is not None else 1
        problems.append(
            f"{where}:{line}: {'.'.join(path)}: {of} an argument {throttle.per_key!r}"
            f"{did_you_mean(throttle.per_key, taken)}; every job would share one key"
        )
    return problems


def _throttle_problems(spec: task_registry.TaskSpec) -> list[str]:
    """The task's own flow limits (``rate=``, ``concurrency=``, ``per_key=``), checked
    as queues.yaml's ``throttle`` entries are, named by the decorator's file:line."""
    import inspect
    from pathlib import Path

    from pydantic import ValidationError

    from jobsys.config.models import Throttle

    if spec.rate is None and spec.concurrency is None and spec.per_key is None:
        return []
    try:
        where = (
            f"{display_path(Path(inspect.getsourcefile(spec.func) or '?'))}:"
            f"{inspect.getsourcelines(spec.func)[1]}"
        )
    except (OSError, TypeError):
        where = f"{spec.func.__module__}:{spec.func.__code__.co_firstlineno}"
    try:
        Throttle(rate=spec.rate, concurrency=spec.concurrency, per_key=spec.per_key)
    except ValidationError as exc:
        return [
            f"{where}: task {spec.name!r}: "
            + ".".join(str(p) for p in error["loc"])
            + (": " if error["loc"] else "")
            + str(error["msg"]).removeprefix("Value error, ")
            for error in exc.errors()
        ]
    params = spec.parameters
    if (
        spec.per_key
        and params is not None
        and not params.any_name
        and spec.per_key not in params.names
    ):
        return [
            f"{where}: task {spec.name!r}: per_key: it does not take an argument "
            f"{spec.per_key!r}{did_you_mean(spec.per_key, params.names)}; "
            "every job would share one key"
        ]
    return []


def _task_refs(
    schedule: ScheduleFile, schedule_doc: LocatedDocument | None
) -> list[tuple[tuple[str, ...], str]]:
    """(key path, task name) of every task a schedule entry names. From the raw file when
    there is one, so an entry invalid for another reason (a typo in a key) still has its
    task checked in the same run: every problem at once."""
    raw = schedule_doc.data.get("entries") if schedule_doc is not None else None
    entries: dict[str, Any]
    if isinstance(raw, dict):
        entries = {str(k): v for k, v in raw.items() if isinstance(v, dict)}
    else:
        entries = {n: e.model_dump() for n, e in schedule.entries.items()}
    refs: list[tuple[tuple[str, ...], str]] = []
    for name, entry in entries.items():
        if isinstance(entry.get("task"), str):
            refs.append((("entries", name, "task"), entry["task"]))
        fanout = entry.get("fanout")
        if isinstance(fanout, dict) and isinstance(fanout.get("task"), str):
            refs.append((("entries", name, "fanout", "task"), fanout["task"]))
    return refs


_LOADED: dict[tuple[Any, ...], Config] = {}
MAX_KEPT = 8  # configurations kept (directories x applications x with_tasks)


def _file_stats(directory: Path) -> tuple[Any, ...] | None:
    from jobsys.config.loader import QUEUES_FILE, SCHEDULE_FILE

    try:
        return tuple(
            (s.st_ino, s.st_size, s.st_mtime_ns)
            for s in ((directory / name).stat() for name in (QUEUES_FILE, SCHEDULE_FILE))
        )
    except OSError:
        return None


def load_config(settings: Settings, *, with_tasks: bool = True) -> Config:
    """Load and validate the configuration; with ``with_tasks``, import the application
    and check every task reference. Raises :class:`ConfigError` listing every problem
    of both files and of the task references at once.

    A configuration that loaded is kept, and validated again only when a file changed
    (its size, inode or modification time) or another application is asked for: a
    process that reads it per request (the dashboard refreshes on every event) parses
    the YAML once. The objects are frozen, so one is shared safely."""
    stats = _file_stats(settings.config_dir)
    key = (str(settings.config_dir.resolve()), stats, with_tasks, settings.app_modules)
    config = _LOADED.get(key) if stats is not None else None
    if config is None:
        config = _load(settings, with_tasks=with_tasks)
        if stats is not None and _file_stats(settings.config_dir) == stats:
            if len(_LOADED) >= MAX_KEPT:
                _LOADED.clear()
            _LOADED[key] = config
    return config


def load_config_tasks_if_they_load(settings: Settings) -> Config:
    """The configuration with the application's tasks (their own flow limits explain
    holds too), else the files alone when the application does not import: an overview
    must not depend on the application's code being healthy."""
    try:
        return load_config(settings)
    except ConfigError:
        return load_config(settings, with_tasks=False)


def _load(settings: Settings, *, with_tasks: bool) -> Config:
    if not with_tasks:
        return load_config_files(settings.config_dir)
    from jobsys.config.loader import declared_app_modules

    declared = declared_app_modules(settings.config_dir)
    modules = settings.app_modules or declared or (DEMO_MODULE,)
    import_problems = import_modules(modules)
    try:
        config = load_config_files(
            settings.config_dir, task_checker=None if import_problems else task_problems
        )
    except ConfigError as exc:
        raise ConfigError(
            [*import_problems, *exc.problems], hint=exc.hint, runs_check=exc.runs_check
        ) from None
    if import_problems:
        raise ConfigError(import_problems, hint="Fix the application modules, then retry.")
    return config


def effective_config(settings: Settings) -> dict[str, Any]:
    """``jobsys config show``: both files as loaded, defaults included, with what is in
    effect where the file leaves it open: the database actually used (password masked)
    and its ``source`` (``flag``, ``env``, ``config`` or ``embedded``), and each lane's
    queues (a capsule lane with none listed serves the queue of its own name). Never
    starts the embedded server."""
    from jobsys.config.loader import BASE_LANE
    from jobsys.db import embedded
    from jobsys.db.url import mask

    config = load_config(settings, with_tasks=False)
    queues = config.queues.model_dump(mode="json")
    url: str | None
    if settings.database_url:
        url, source = settings.database_url, settings.database_url_source or "env"
    elif config.queues.database.url:
        url, source = config.queues.database.url, "config"
    else:
        url, source = embedded.status(settings.home).url, "embedded"
    queues["database"] = {
        "url": mask(url) if url else None,
        "source": source,
        "config_url": mask(config.queues.database.url) if config.queues.database.url else None,
    }
    for name, lane in config.lanes.items():
        section = queues["base"] if name == BASE_LANE else queues["capsules"][name]
        section["queues"] = list(lane.queues)
    return {
        "directory": str(config.directory),
        "queues": queues,
        "schedule": config.schedule.model_dump(mode="json"),
    }


def config_for(context: Any) -> Config:
    """The configuration a built-in task runs with: the worker's own (passed in the job
    context by the runtime), else the process's files (a plain Procrastinate worker)."""
    given = (getattr(context, "additional_context", None) or {}).get("config")
    if isinstance(given, Config):
        return given
    from jobsys.settings import from_env

    return load_config(from_env(), with_tasks=False)
