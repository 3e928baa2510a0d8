"""Declaring pipelines: multi-step work for one entity, as ordered stages of steps.

A stage is one step, or a list of steps that run in parallel and join before the
next stage. Each step is a jobsys task on its own queue; every step receives the
pipeline's ``args`` as its keyword arguments::

    from jobsys.pipelines.definitions import pipeline, step

    story_media = pipeline(
        "story_media",
        step("download", download_story),
        [step("visual", analyse_visual), step("faces", detect_faces), step("ocr", read_text)],
        step("metadata", build_metadata),
    )

Declarations are import-time and process-wide, like tasks. The worker middleware
(``jobsys.pipelines.middleware``) keeps the steps' state; ``pipeline_store.start_pipeline``
starts one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jobsys import tasks as task_registry

#: A pipeline's statuses (the table's check constraint), and those it never leaves.
PIPELINE_STATUSES = ("pending", "running", "succeeded", "failed", "cancelled")
TERMINAL_STATUSES = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Step:
    name: str
    #: The task's registered name; resolved against the task registry at start.
    task: str
    #: A queue other than the task's own (None: the task's queue).
    queue: str | None = None


@dataclass(frozen=True)
class PipelineSpec:
    name: str
    stages: tuple[tuple[Step, ...], ...]

    def steps(self) -> list[tuple[int, Step]]:
        """Every step with its stage number (0-based), in order."""
        return [(index, s) for index, stage in enumerate(self.stages) for s in stage]


class PipelineDeclarationError(ValueError):
    pass


_PIPELINES: dict[str, PipelineSpec] = {}
#: step_task_names() of the pipelines declared so far (None: declared since).
_STEP_TASKS: frozenset[str] | None = None


def step(name: str, task: str | Callable[..., Any], *, queue: str | None = None) -> Step:
    """A step running ``task`` (a jobsys task function, or a task name)."""
    spec = getattr(task, "jobsys_task", None)
    task_name = spec.name if isinstance(spec, task_registry.TaskSpec) else task
    if not isinstance(task_name, str):
        raise PipelineDeclarationError(f"step {name!r}: {task!r} is not a jobsys task")
    return Step(name=name, task=task_name, queue=queue)


def pipeline(name: str, *stages: Step | Sequence[Step]) -> PipelineSpec:
    """Declare (and register) a pipeline of ordered stages."""
    normalised = tuple((item,) if isinstance(item, Step) else tuple(item) for item in stages)
    names = [s.name for stage in normalised for s in stage]
    if not normalised or any(not stage for stage in normalised):
        raise PipelineDeclarationError(f"pipeline {name!r}: every stage needs a step")
    if len(names) != len(set(names)):
        raise PipelineDeclarationError(f"pipeline {name!r}: step names must be unique")
    spec = PipelineSpec(name=name, stages=normalised)
    existing = _PIPELINES.get(name)
    if existing is not None and existing != spec:
        raise PipelineDeclarationError(f"two pipelines are named {name!r}")
    _PIPELINES[name] = spec
    global _STEP_TASKS
    _STEP_TASKS = None
    return spec


def get(name: str) -> PipelineSpec | None:
    return _PIPELINES.get(name)


def registry() -> dict[str, PipelineSpec]:
    return dict(_PIPELINES)


def step_task_names() -> frozenset[str]:
    """Tasks used as a step of some pipeline: only their jobs pay the step bookkeeping.
    Asked for every job a worker runs: made once per set of declared pipelines."""
    global _STEP_TASKS
    if _STEP_TASKS is None:
        _STEP_TASKS = frozenset(s.task for spec in _PIPELINES.values() for _, s in spec.steps())
    return _STEP_TASKS
