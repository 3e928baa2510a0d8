"""The Procrastinate API jobsys relies on, pinned: an upgrade that renames or drops any
of it fails here, loudly, naming what is missing, instead of breaking a worker at run
time. Everything listed is used by ``jobsys.engine`` (the only package that imports
Procrastinate); the database side (SQL functions, tables, channels) is pinned in
``tests/integration/test_engine_schema_contract.py``.

Private names are pinned too: ``LaneWorker`` overrides ``Worker`` methods and reads its
attributes, ``engine.pool`` overrides the connector's ``_create_pool``.
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import pytest

#: module -> names that must exist in it.
MODULE_NAMES: dict[str, tuple[str, ...]] = {
    "procrastinate": (
        "App",
        "BaseRetryStrategy",
        "JobContext",
        "PsycopgConnector",
        "RetryDecision",
    ),
    "procrastinate.exceptions": (
        "AlreadyEnqueued",
        "ConnectorException",
        "JobAborted",
        "TaskNotFound",
        "UniqueViolation",
    ),
    "procrastinate.job_context": ("AbortReason", "JobContext", "JobResult"),
    "procrastinate.jobs": ("DeleteJobCondition", "Job", "Status"),
    "procrastinate.manager": ("JobManager", "get_channel_for_queues"),
    "procrastinate.retry": ("RetryDecision",),
    "procrastinate.schema": ("migrations_path",),
    "procrastinate.sql": ("queries",),
    "procrastinate.utils": ("causes", "cancel_and_capture_errors", "wait_any", "sync_to_async"),
    # LaneWorker._process_job composes the worker and task middlewares as Procrastinate does
    "procrastinate.middleware": ("compose",),
    "procrastinate.worker": ("Worker",),
}

#: "module:Class" -> methods or class attributes it must have.
CLASS_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "procrastinate.worker:Worker": (
        # overridden by LaneWorker
        "_start_side_tasks",
        "_fetch_and_process_jobs",
        "_persist_job_status",
        "_shutdown",
        "_abort_running_jobs",
        # called by LaneWorker
        "_abort_job",
        "_handle_abort_jobs_requested",
        "_poll_jobs_to_abort",
        "_process_job",
        # called by LaneWorker._process_job, Procrastinate's own step for step
        "_log_extra",
        "_log_job_outcome",
        "_resolve_task_middlewares",
        "run",
        "stop",
    ),
    "procrastinate.psycopg_connector:PsycopgConnector": (
        "_create_pool",
        # read by engine.pool.of / engine.pool.connection (every borrowed connection)
        "pool",
        "execute_query_async",
        "execute_query_all_async",
        "execute_query_all_async_with_connection",
    ),
    "procrastinate.manager:JobManager": (
        "batch_defer_jobs_async",
        "cancel_job_by_id_async",
        "unregister_worker",
    ),
    "procrastinate.app:App": ("task", "open_async", "close_async"),
    # engine.api.strategy_retries (the pipeline and failure-capture middlewares)
    "procrastinate.tasks:Task": ("get_retry_exception",),
    "procrastinate.jobs:Job": ("from_row", "evolve", "call_string"),
    "procrastinate.job_context:JobContext": ("should_abort", "evolve"),
}

#: "module:Class" -> attributes its instances get in ``__init__`` or at run time
#: (``self.<name> =`` somewhere in the class's source).
INSTANCE_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "procrastinate.worker:Worker": (
        "_running_jobs",
        "_job_semaphore",
        "_new_job_event",
        "_stop_event",
        "_job_ids_to_abort",
        "app",
        "queues",
        "worker_id",
        "worker_name",
        "concurrency",
        "additional_context",
        "fetch_job_polling_interval",
        "shutdown_graceful_timeout",
        "delete_jobs",
        "worker_middleware",
        "logger",
    ),
    # LaneWorker._process_job: a task's function, name and whether it takes the context
    "procrastinate.tasks:Task": ("func", "name", "pass_context"),
    "procrastinate.psycopg_connector:PsycopgConnector": ("_pool_factory",),
    # connector: engine.pool.of reaches the pool through it
    "procrastinate.app:App": ("connector", "job_manager", "tasks"),
}

#: "module:callable" -> keyword parameters jobsys passes it.
PARAMETERS: dict[str, tuple[str, ...]] = {
    "procrastinate.worker:Worker.__init__": (
        "queues",
        "name",
        "concurrency",
        "wait",
        "fetch_job_polling_interval",
        "shutdown_graceful_timeout",
        "listen_notify",
        "additional_context",
        "install_signal_handlers",
        "stalled_worker_timeout",
        "worker_middleware",
    ),
    "procrastinate.worker:Worker._persist_job_status": (
        "job",
        "status",
        "retry_decision",
        "context",
        "job_result",
    ),
    "procrastinate.manager:JobManager.batch_defer_jobs_async": ("jobs", "connection"),
    "procrastinate.manager:JobManager.cancel_job_by_id_async": (
        "job_id",
        "abort",
        "delete_job",
        "connection",
    ),
    "procrastinate.app:App.task": ("name", "queue", "priority", "pass_context", "retry"),
    "procrastinate.tasks:Task.get_retry_exception": ("exception", "job"),
    "procrastinate.worker:Worker._log_extra": ("action", "context", "job_result"),
    "procrastinate.worker:Worker._log_job_outcome": (
        "status",
        "context",
        "job_result",
        "job_retry",
        "exc_info",
    ),
    "procrastinate.worker:Worker._resolve_task_middlewares": ("task", "task_is_async"),
    "procrastinate.job_context:JobResult.__init__": ("start_timestamp",),
    "procrastinate.job_context:JobContext.__init__": (
        "app",
        "worker_name",
        "worker_queues",
        "additional_context",
        "job",
        "abort_reason",
        "start_timestamp",
    ),
    "procrastinate.jobs:Job.__init__": (
        "id",
        "queue",
        "task_name",
        "priority",
        "lock",
        "queueing_lock",
        "task_kwargs",
        "scheduled_at",
    ),
    "procrastinate.retry:RetryDecision.__init__": ("retry_in",),
}

#: Procrastinate's named queries jobsys runs itself, and a piece of each it relies on.
NAMED_QUERIES: dict[str, str] = {
    "finish_job": "procrastinate_finish_job_v1(%(job_id)s, %(status)s, %(delete_job)s)",
    "retry_job": "procrastinate_retry_job_v2(%(job_id)s, %(retry_at)s, %(new_priority)s, "
    "%(new_queue_name)s, %(new_lock)s)",
    "cancel_job": "procrastinate_cancel_job_v1(%(job_id)s, %(abort)s, %(delete_job)s)",
    "defer_jobs": "procrastinate_defer_jobs_v1(",
}


def _resolve(path: str) -> Any:
    module_name, _, attr_path = path.partition(":")
    obj: Any = importlib.import_module(module_name)
    for part in attr_path.split(".") if attr_path else ():
        obj = getattr(obj, part)
    return obj


def missing(
    module_names: dict[str, tuple[str, ...]] = MODULE_NAMES,
    class_attributes: dict[str, tuple[str, ...]] = CLASS_ATTRIBUTES,
    instance_attributes: dict[str, tuple[str, ...]] = INSTANCE_ATTRIBUTES,
    parameters: dict[str, tuple[str, ...]] = PARAMETERS,
) -> list[str]:
    """Every pinned name the installed Procrastinate lacks, one line each."""
    problems = []
    for module_name, names in module_names.items():
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            problems.append(f"module {module_name}: cannot be imported ({exc})")
            continue
        problems += [f"{module_name}.{n}: missing" for n in names if not hasattr(module, n)]
    for path, names in class_attributes.items():
        cls = _resolve(path)
        problems += [f"{path}.{n}: missing" for n in names if not hasattr(cls, n)]
    for path, names in instance_attributes.items():
        cls = _resolve(path)
        source = "".join(inspect.getsource(c) for c in cls.__mro__ if c.__module__ != "builtins")
        fields = set(getattr(cls, "__attrs_attrs__", ()) and (a.name for a in cls.__attrs_attrs__))
        problems += [
            f"{path}.{n}: no longer set on instances"
            for n in names
            if f"self.{n} =" not in source and f"self.{n}:" not in source and n not in fields
        ]
    for path, names in parameters.items():
        try:
            signature = inspect.signature(_resolve(path))
        except AttributeError:
            problems.append(f"{path}: missing")
            continue
        problems += [f"{path}: no parameter {n!r}" for n in names if n not in signature.parameters]
    return problems


def test_every_pinned_procrastinate_name_exists() -> None:
    assert missing() == []


def test_a_name_procrastinate_lacks_is_reported() -> None:
    """The check can fail: a pin on something Procrastinate does not have is named."""
    problems = missing(
        module_names={"procrastinate.exceptions": ("JobAborted", "NoSuchError")},
        class_attributes={"procrastinate.worker:Worker": ("_no_such_method",)},
        instance_attributes={"procrastinate.worker:Worker": ("_no_such_attribute",)},
        parameters={"procrastinate.manager:JobManager.cancel_job_by_id_async": ("nope",)},
    )
    assert problems == [
        "procrastinate.exceptions.NoSuchError: missing",
        "procrastinate.worker:Worker._no_such_method: missing",
        "procrastinate.worker:Worker._no_such_attribute: no longer set on instances",
        "procrastinate.manager:JobManager.cancel_job_by_id_async: no parameter 'nope'",
    ]


@pytest.mark.parametrize(("name", "piece"), sorted(NAMED_QUERIES.items()))
def test_procrastinate_named_queries_jobsys_runs(name: str, piece: str) -> None:
    from procrastinate import sql

    assert piece in sql.queries[name]


def test_the_retry_function_jobsys_calls_is_the_one_behind_retry_job() -> None:
    from procrastinate import sql

    from jobsys.engine.queries import RETRY_FUNCTION

    assert f"{RETRY_FUNCTION}(" in sql.queries["retry_job"]


def test_channel_names_and_class_paths_match_procrastinate() -> None:
    from procrastinate import exceptions
    from procrastinate.manager import get_channel_for_queues

    from jobsys import engine
    from jobsys.engine import channels

    assert list(get_channel_for_queues(["q"])) == [channels.queue_channel("q")]
    assert list(get_channel_for_queues(None)) == [channels.ANY_QUEUE_CHANNEL]
    for cls, path in (
        (exceptions.JobAborted, engine.JOB_ABORTED_CLASS),
        (exceptions.TaskNotFound, engine.TASK_NOT_FOUND_CLASS),
    ):
        assert f"{cls.__module__}.{cls.__qualname__}" == path


def test_the_pinned_schema_is_the_installed_version() -> None:
    from importlib.metadata import version

    from jobsys.engine.schema import PINNED_VERSION

    assert version("procrastinate") == PINNED_VERSION


#: sha256 of Procrastinate's ``Worker._process_job`` source that ``LaneWorker._process_job``
#: follows step for step (3.10): a release that changes it fails here, so the copy is
#: read against the new one instead of drifting from it silently.
PROCESS_JOB_SOURCE_SHA256 = "55a67c0ff525add9"


def process_job_fingerprint() -> str:
    import hashlib

    from procrastinate.worker import Worker

    source = inspect.getsource(Worker._process_job)
    return hashlib.sha256(source.encode()).hexdigest()[:16]


def test_procrastinates_process_job_is_the_one_lane_worker_follows() -> None:
    assert process_job_fingerprint() == PROCESS_JOB_SOURCE_SHA256, (
        "procrastinate.worker.Worker._process_job changed: compare it with "
        "jobsys/engine/worker.py LaneWorker._process_job, carry the change over, then "
        "update PROCESS_JOB_SOURCE_SHA256"
    )


#: Migration 0029 dropped Procrastinate's foreign key from ``procrastinate_events`` to
#: ``procrastinate_jobs`` (a job's events are deleted by a jobsys trigger instead) at
#: this Procrastinate version. Procrastinate's migration scripts after it (the ones an
#: upgrade runs, ``jobsys.engine.schema.migration_sql``) must not touch that constraint:
#: altering it by name would fail on jobsys's schema, adding it back would put the
#: per-event check back. See README, "Upgrading Procrastinate".
EVENTS_FOREIGN_KEY_DROPPED_AT = "3.10.0"


def scripts_touching_the_events_foreign_key(scripts: list[str]) -> list[str]:
    """The first line of each script that names the constraint (not the index of the same
    stem, ``..._fkey_v1``) or makes ``procrastinate_events`` reference another table."""
    import re

    named = re.compile(r"procrastinate_events_job_id_fkey(?!_v1)")
    references = re.compile(r"procrastinate_events\b[^;]*\bREFERENCES\b", re.IGNORECASE | re.S)
    return [
        script.strip().splitlines()[0] if script.strip() else ""
        for script in scripts
        if named.search(script) or references.search(script)
    ]


def test_no_procrastinate_migration_after_jobsys_dropped_the_events_foreign_key_touches_it() -> (
    None
):
    from jobsys.engine.schema import migration_sql

    later = migration_sql(EVENTS_FOREIGN_KEY_DROPPED_AT, "999.0.0")
    assert scripts_touching_the_events_foreign_key(later) == []


def test_a_script_touching_the_events_foreign_key_is_reported() -> None:
    scripts = [
        "-- fine\nALTER INDEX procrastinate_events_job_id_fkey_v1 RENAME TO x;",
        "-- by name\nALTER TABLE procrastinate_events DROP CONSTRAINT "
        "procrastinate_events_job_id_fkey;",
        "-- back\nALTER TABLE procrastinate_events ADD FOREIGN KEY (job_id)\n"
        "    REFERENCES procrastinate_jobs (id);",
    ]
    assert scripts_touching_the_events_foreign_key(scripts) == ["-- by name", "-- back"]
