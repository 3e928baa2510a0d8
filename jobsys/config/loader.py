"""Load and validate ``queues.yaml`` and ``schedule.yaml`` into one :class:`Config`.

Every problem in both files is collected and reported at once, each as
``file:line: key.path: message`` with "did you mean" for unknown keys. Nothing is
half-applied: either a whole valid :class:`Config` comes back or :class:`ConfigError`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobsys.config import yamlfile
from jobsys.config.models import (
    MAINTENANCE_TASKS,
    NAME_RE,
    NAME_RULE,
    SERVICE_HEALTH_TASK,
    Lane,
    QueuesFile,
    ScheduleEntry,
    ScheduleFile,
)
from jobsys.errors import ConfigError, did_you_mean

QUEUES_FILE = "queues.yaml"
SCHEDULE_FILE = "schedule.yaml"
BASE_LANE = "base"

#: (config directory, schedule, known queues or None, schedule.yaml) -> problems.
TaskChecker = Callable[
    [
        Path,
        ScheduleFile,
        "set[str] | None",
        "yamlfile.LocatedDocument | None",
        "QueuesFile | None",
        "yamlfile.LocatedDocument | None",
    ],
    list[str],
]


@dataclass(frozen=True)
class LaneSpec:
    name: str
    queues: tuple[str, ...]
    concurrency: int
    timeout_seconds: float
    #: ``priority``, ``strict`` or ``weights`` (jobsys.config.models.LANE_ORDERS).
    order: str = "priority"
    #: One weight per queue, in ``queues`` order (``order: weights``).
    weights: tuple[int, ...] = ()


@dataclass(frozen=True)
class Config:
    directory: Path
    queues: QueuesFile
    schedule: ScheduleFile
    lanes: dict[str, LaneSpec] = field(default_factory=dict)

    @property
    def queue_to_lane(self) -> dict[str, str]:
        return {q: lane.name for lane in self.lanes.values() for q in lane.queues}

    @property
    def all_queues(self) -> tuple[str, ...]:
        return tuple(q for lane in self.lanes.values() for q in lane.queues)

    def lane_of(self, queue: str) -> str | None:
        return self.queue_to_lane.get(queue)

    def schedule_timezone(self, entry: ScheduleEntry) -> str:
        return entry.timezone or self.schedule.defaults.timezone


def display_path(path: Path) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return str(path)


def _dotted(loc: Iterable[str | int]) -> str:
    return ".".join(str(part) for part in loc) or "(top level)"


def _model_fields_at(model: type[Any], loc: tuple[str | int, ...]) -> list[str]:
    """Field names valid at ``loc``'s parent, for "did you mean" on unknown keys."""
    import types
    import typing

    from pydantic import BaseModel

    def unwrap_optional(tp: Any) -> Any:
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            inner = [a for a in typing.get_args(tp) if a is not type(None)]
            return inner[0] if len(inner) == 1 else tp
        return tp

    current: Any = model
    for part in loc[:-1]:
        current = unwrap_optional(current)
        if isinstance(current, type) and issubclass(current, BaseModel):
            info = current.model_fields.get(str(part))
            if info is None:
                return []
            current = info.annotation
        else:  # dict[str, X] or tuple[X, ...]: step into the value type
            args = typing.get_args(current)
            current = (
                args[-1] if typing.get_origin(current) is dict else (args[0] if args else None)
            )
    current = unwrap_optional(current)
    if isinstance(current, type) and issubclass(current, BaseModel):
        return list(current.model_fields)
    return []


_WHOLE = object()


def _validate(
    doc: yamlfile.LocatedDocument,
    model: type[Any],
    problems: list[str],
    *,
    data: Any = _WHOLE,
    prefix: tuple[str | int, ...] = (),
) -> Any | None:
    """``model`` from ``data`` (default: the whole document) found at ``prefix``."""
    from pydantic import ValidationError

    try:
        return model.model_validate(doc.data if data is _WHOLE else data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = (*prefix, *err["loc"])
            where = f"{display_path(doc.path)}:{doc.line_of(loc)}"
            if err["type"] == "extra_forbidden":
                hint = did_you_mean(str(loc[-1]), _model_fields_at(model, loc[len(prefix) :]))
                problems.append(f"{where}: {_dotted(loc)}: unknown key{hint}")
            elif err["type"] == "missing":
                problems.append(f"{where}: {_dotted(loc)}: required key is missing")
            else:
                msg = err["msg"].removeprefix("Value error, ")
                msg = msg[0].lower() + msg[1:] if msg else msg
                problems.append(f"{where}: {_dotted(loc)}: {msg}")
        return None


def _validate_schedule(
    doc: yamlfile.LocatedDocument, problems: list[str]
) -> tuple[ScheduleFile | None, bool]:
    """The schedule, entry by entry, so one bad entry does not hide the others'
    problems: (the schedule of the valid entries, whether every part was valid)."""
    entries = doc.data.get("entries")
    if entries is None:  # `entries:` with nothing under it: said by _check_completeness
        data = {k: v for k, v in doc.data.items() if k != "entries"}
        schedule = _validate(doc, ScheduleFile, problems, data=data)
        return schedule, schedule is not None
    if not isinstance(entries, dict):
        schedule = _validate(doc, ScheduleFile, problems)
        return schedule, schedule is not None
    head_data = {k: v for k, v in doc.data.items() if k != "entries"}
    head = _validate(doc, ScheduleFile, problems, data=head_data)
    head_whole = head is not None
    if head is None:
        # Reported above; the entries are still checked (cron, timezone, tasks) with
        # the keys that are valid, so one run says every problem.
        known = {k: v for k, v in head_data.items() if k in ScheduleFile.model_fields}
        head = _validate(doc, ScheduleFile, [], data=known) or _validate(
            doc, ScheduleFile, [], data={}
        )
        if head is None:
            return None, False
    good: dict[str, Any] = {}
    for name, raw in entries.items():
        entry = _validate(doc, ScheduleEntry, problems, data=raw, prefix=("entries", name))
        if entry is not None:
            good[name] = entry
    partial = _validate(
        doc, ScheduleFile, problems, data={"defaults": head.defaults, "entries": good}
    )
    return partial, head_whole and partial is not None and len(good) == len(entries)


def declared_app_modules(directory: Path) -> tuple[str, ...]:
    """``app.modules`` of queues.yaml, read leniently (so the application can be
    imported and its tasks checked even while other keys are wrong)."""
    try:
        data = yamlfile.read(directory / QUEUES_FILE).data
    except yamlfile.YamlProblem:
        return ()
    app = data.get("app")
    modules = app.get("modules") if isinstance(app, dict) else None
    if isinstance(modules, list) and all(isinstance(m, str) for m in modules):
        return tuple(modules)
    return ()


def _read(path: Path, problems: list[str]) -> yamlfile.LocatedDocument | None:
    try:
        return yamlfile.read(path)
    except yamlfile.YamlProblem as exc:
        problems.append(f"{display_path(path)}:{exc.line}: {exc.message}")
        return None


def _build_lanes(queues: QueuesFile) -> dict[str, LaneSpec]:
    def spec(name: str, lane: Lane, names: tuple[str, ...]) -> LaneSpec:
        weights = tuple(lane.weights.get(q, 1) for q in names) if lane.order == "weights" else ()
        return LaneSpec(
            name, names, lane.concurrency, lane.timeout_seconds, order=lane.order, weights=weights
        )

    lanes = {BASE_LANE: spec(BASE_LANE, queues.base, queues.base.queues)}
    for name, lane in queues.capsules.items():
        lanes[name] = spec(name, lane, lane.queues or (name,))
    return lanes


def _raw_keys(doc: yamlfile.LocatedDocument, *path: str) -> list[str]:
    """The names of the mapping at ``path`` as written, whether or not the file passed
    validation: a problem elsewhere in queues.yaml must not hide an unknown name here
    (every problem at once)."""
    node: Any = doc.data
    for key in path:
        node = node.get(key) if isinstance(node, dict) else None
    return [k for k in node if isinstance(k, str)] if isinstance(node, dict) else []


def _check_throttles(doc: yamlfile.LocatedDocument, known: set[str]) -> list[str]:
    """Each ``throttle`` entry names a configured queue or a task (a dotted name)."""
    problems = []
    for name in _raw_keys(doc, "throttle"):
        if name not in known and "." not in name:
            path = ("throttle", name)
            problems.append(
                f"{display_path(doc.path)}:{doc.line_of(path)}: {_dotted(path)}: not a queue "
                f"of any lane nor a task name (module.name){did_you_mean(name, known)}"
            )
    return problems


def _check_weights(doc: yamlfile.LocatedDocument, queues: QueuesFile) -> list[str]:
    """Every queue named in a lane's ``weights`` is one of the lane's queues."""
    problems = []
    lanes = [(("base",), queues.base, queues.base.queues)] + [
        (("capsules", name), lane, lane.queues or (name,)) for name, lane in queues.capsules.items()
    ]
    for key, lane, names in lanes:
        if lane.weights and lane.order != "weights":
            path = (*key, "weights")
            problems.append(
                f"{display_path(doc.path)}:{doc.line_of(path)}: {_dotted(path)}: "
                "weights apply only with order: weights"
            )
        for queue in lane.weights:
            if queue not in names:
                path = (*key, "weights", queue)
                problems.append(
                    f"{display_path(doc.path)}:{doc.line_of(path)}: {_dotted(path)}: "
                    f"{queue!r} is not a queue of this lane{did_you_mean(queue, names)}"
                )
    return problems


def _raw_lanes(data: Mapping[str, Any]) -> dict[str, tuple[tuple[str | int, ...], list[Any]]]:
    """Lanes read leniently from raw YAML, so topology problems are reported even when
    other keys fail validation: lane -> (key path, queue names)."""
    lanes: dict[str, tuple[tuple[str | int, ...], list[Any]]] = {}
    base = data.get("base")
    if isinstance(base, dict):
        queues = base.get("queues")
        lanes[BASE_LANE] = (("base",), list(queues) if isinstance(queues, list) else [])
    capsules = data.get("capsules")
    if isinstance(capsules, dict):
        for name, lane in capsules.items():
            queues = lane.get("queues") if isinstance(lane, dict) else None
            lanes[str(name)] = (
                ("capsules", name),
                list(queues) if isinstance(queues, list) and queues else [name],
            )
    return lanes


def _check_topology(doc: yamlfile.LocatedDocument) -> tuple[list[str], set[str]]:
    """Queue names, one lane per queue; returns the problems and the known queues."""
    problems = []
    where = display_path(doc.path)
    seen: dict[str, str] = {}
    lanes = _raw_lanes(doc.data)
    if BASE_LANE in lanes and not lanes[BASE_LANE][1]:
        line = doc.line_of(("base",))
        problems.append(f"{where}:{line}: base.queues: must list at least one queue")
    for lane_name, (key, queues) in lanes.items():
        for i, queue in enumerate(queues):
            path = (
                (*key, "queues", i)
                if key != ("capsules", lane_name) or len(queues) > 1 or queue != lane_name
                else key
            )
            if not isinstance(queue, str) or not NAME_RE.match(queue):
                problems.append(
                    f"{where}:{doc.line_of(path)}: {_dotted(path)}: {queue!r} {NAME_RULE}"
                )
                continue
            if queue in seen:
                problems.append(
                    f"{where}:{doc.line_of(path)}: {_dotted(key)}.queues: queue {queue!r} "
                    f"is already served by lane {seen[queue]!r}; a queue belongs to one lane only"
                )
            seen.setdefault(queue, lane_name)
    return problems, set(seen)


def _check_queue_refs(queues_doc: yamlfile.LocatedDocument, known: set[str]) -> list[str]:
    problems = []
    for name in _raw_keys(queues_doc, "health", "queue_overrides"):
        if name not in known:
            line = queues_doc.line_of(("health", "queue_overrides", name))
            problems.append(
                f"{display_path(queues_doc.path)}:{line}: health.queue_overrides.{name}: "
                f"unknown queue{did_you_mean(name, known)}"
            )
    return problems


def _check_schedule(
    doc: yamlfile.LocatedDocument, schedule: ScheduleFile, known_queues: set[str] | None
) -> list[str]:
    from jobsys.cron import CronInvalid, timezone_of, validate

    problems = []
    where = display_path(doc.path)
    try:
        timezone_of(schedule.defaults.timezone)
    except CronInvalid as exc:
        line = doc.line_of(("defaults", "timezone"))
        problems.append(f"{where}:{line}: defaults.timezone: {exc}")
    for name, entry in schedule.entries.items():
        base = ("entries", name)
        try:
            validate(entry.cron)
        except CronInvalid as exc:
            problems.append(f"{where}:{doc.line_of((*base, 'cron'))}: entries.{name}.cron: {exc}")
        if entry.timezone is not None:
            try:
                timezone_of(entry.timezone)
            except CronInvalid as exc:
                line = doc.line_of((*base, "timezone"))
                problems.append(f"{where}:{line}: entries.{name}.timezone: {exc}")
        refs: list[tuple[tuple[str, ...], str | None]] = [((*base, "queue"), entry.queue)]
        if entry.fanout is not None:
            refs.append(((*base, "fanout", "queue"), entry.fanout.queue))
            refs.append(((*base, "fanout", "batch_queue"), entry.fanout.batch_queue))
        for key, queue in refs:
            if queue is not None and known_queues is not None and queue not in known_queues:
                problems.append(
                    f"{where}:{doc.line_of(key)}: {_dotted(key)}: unknown queue {queue!r}"
                    f"{did_you_mean(queue, known_queues)}"
                )
    return problems


def _check_completeness(
    doc: yamlfile.LocatedDocument, queues_data: Mapping[str, Any] | None
) -> list[str]:
    """An entry-less schedule must say so; the maintenance tasks must each have an entry.

    Read from the raw document, so an entry that fails validation still counts as
    listed (its own problem is reported beside) and nothing is said twice.
    """
    where = display_path(doc.path)
    data = doc.data
    entries = data.get("entries")
    allow_empty = data.get("allow_empty") is True
    if entries is None or entries == {}:
        if allow_empty:
            return []  # explicitly empty: runs nothing, maintenance included
        return [
            f"{where}:{doc.line_of(('entries',))}: entries: the schedule has no entries "
            "(an empty or truncated file?); restore the file, or if no recurring job "
            "should run write `entries: {}` with `allow_empty: true`"
        ]
    if not isinstance(entries, dict) or data.get("maintenance") == "optional":
        return []  # a wrong type is said by validation
    listed = {e.get("task") for e in entries.values() if isinstance(e, dict)}
    required = dict(MAINTENANCE_TASKS)
    health = queues_data.get("health") if queues_data else None
    if isinstance(health, dict) and health.get("services"):
        required[SERVICE_HEALTH_TASK] = "checks the services in health.services"
    return [
        f"{where}:{doc.line_of(('entries',))}: entries: no entry runs the maintenance task "
        f'{task!r} ({what}); add one (e.g. cron: "* * * * *", task: {task}), or set '
        "`maintenance: optional` if this schedule deliberately runs without it"
        for task, what in required.items()
        if task not in listed
    ]


def load(
    directory: Path,
    *,
    task_checker: TaskChecker | None = None,
    with_schedule: bool = True,
) -> Config:
    """Load both files from ``directory``; raise :class:`ConfigError` listing every problem.

    ``task_checker`` validates task references against the loaded task registry; it
    is passed in by callers that have imported the application
    (``jobsys.config.application``). Without ``with_schedule``, queues.yaml alone and
    an empty schedule (``schedule.yaml`` unread): what pausing a queue needs.
    """
    problems: list[str] = []
    queues_path = directory / QUEUES_FILE
    schedule_path = directory / SCHEDULE_FILE
    if not directory.is_dir():
        raise ConfigError(
            [f"{display_path(directory)}: configuration directory not found"],
            hint="Point --config-dir or JOBSYS_CONFIG_DIR at the folder holding queues.yaml.",
        )
    queues_doc = _read(queues_path, problems)
    schedule_doc = _read(schedule_path, problems) if with_schedule else None
    queues = _validate(queues_doc, QueuesFile, problems) if queues_doc else None
    schedule, schedule_whole = (
        _validate_schedule(schedule_doc, problems) if schedule_doc else (None, False)
    )
    if not with_schedule:
        schedule, schedule_whole = ScheduleFile(allow_empty=True, maintenance="optional"), True

    lanes: dict[str, LaneSpec] = {}
    known: set[str] | None = None
    if queues_doc is not None:
        topology_problems, known = _check_topology(queues_doc)
        problems.extend(topology_problems)
        problems.extend(_check_queue_refs(queues_doc, known))
        problems.extend(_check_throttles(queues_doc, known))
    if queues is not None and queues_doc is not None and known is not None:
        lanes = _build_lanes(queues)
        problems.extend(_check_weights(queues_doc, queues))
    if schedule is not None and schedule_doc is not None:
        problems.extend(_check_schedule(schedule_doc, schedule, known or None))
    if schedule_doc is not None:
        problems.extend(_check_completeness(schedule_doc, queues_doc.data if queues_doc else None))

    config = None
    if queues is not None and schedule is not None:
        config = Config(directory=directory, queues=queues, schedule=schedule, lanes=lanes)
    if task_checker is not None and schedule is not None:
        # On the valid entries, even beside other problems, so all is said at once.
        problems.extend(task_checker(directory, schedule, known, schedule_doc, queues, queues_doc))
    if problems or config is None or not schedule_whole:
        raise ConfigError(
            problems, hint="Fix the lines above, then run `jobsys config check`.", runs_check=True
        )
    return config
