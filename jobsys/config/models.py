"""Typed, frozen configuration objects for ``queues.yaml`` and ``schedule.yaml``.

Defaults are named constants with their units in the name. Validation that needs
both files (queues referenced by the schedule, tasks' queues) lives in ``loader``.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from jobsys.errors import did_you_mean
from jobsys.tasks import PRIORITY_MAX, PRIORITY_MIN

NAME_RE = re.compile(r"^[a-z0-9_]{1,40}$")
NAME_RULE = "must match [a-z0-9_]{1,40} (it becomes part of a NOTIFY channel name)"

DEFAULT_LANE_CONCURRENCY = 1
DEFAULT_TASK_TIMEOUT_SECONDS = 600.0
DEFAULT_POLL_INTERVAL_SECONDS = 5.0
DEFAULT_SHUTDOWN_GRACE_SECONDS = 30.0
DEFAULT_HEARTBEAT_INTERVAL_SECONDS = 2.0
DEFAULT_DEAD_AFTER_SECONDS = 30.0
DEFAULT_REAP_INTERVAL_SECONDS = 5.0
DEFAULT_MAX_CRASH_REQUEUES = 3
DEFAULT_MAX_ARGS_BYTES = 64 * 1024
DEFAULT_REDACTED_KEYS = (
    "password",
    "passwd",
    "pwd",
    "secret",
    "token",
    "cookie",
    "session",
    "authorization",
    "auth",
    "api_key",
    "apikey",
    "private_key",
    "credential",
    "otp",
)
DEFAULT_TRANSIENT_EXCEPTIONS = (
    "builtins.ConnectionError",
    "builtins.TimeoutError",
    "asyncio.TimeoutError",
    "socket.timeout",
    "urllib.error.URLError",
    "http.client.RemoteDisconnected",
    "psycopg.OperationalError",
)
DEFAULT_AUTHENTICATION_HTTP_STATUS = (401, 403)
DEFAULT_TRANSIENT_HTTP_STATUS = (408, 429, 500, 502, 503, 504)
DEFAULT_ISSUE_AUTO_RESOLVE_SECONDS = 3600.0


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


JobPriority = Annotated[int, Field(ge=PRIORITY_MIN, le=PRIORITY_MAX)]
PositiveSeconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
NonNegativeSeconds = Annotated[float, Field(ge=0, allow_inf_nan=False)]


def check_name(value: str) -> str:
    if not NAME_RE.match(value):
        raise ValueError(f"{value!r} {NAME_RULE}")
    return value


#: How a lane picks among its queues' due jobs: ``priority`` (Procrastinate's rule:
#: priority, then id, across all queues), ``strict`` (queues in their listed order,
#: priority and id within a queue), ``weights`` (each claim orders the queues at random,
#: in proportion to their weights, then as strict).
LANE_ORDERS = ("priority", "strict", "weights")


class Lane(Strict):
    concurrency: int = Field(DEFAULT_LANE_CONCURRENCY, ge=1, le=1000)
    queues: tuple[str, ...] = ()
    timeout_seconds: PositiveSeconds = DEFAULT_TASK_TIMEOUT_SECONDS
    order: Literal["priority", "strict", "weights"] = "priority"
    #: ``order: weights`` only: queue -> weight (a whole number >= 1; unlisted: 1).
    #: (Checked with their lines in the loader: only with ``order: weights``, only the
    #: lane's own queues.)
    weights: dict[str, Annotated[int, Field(ge=1, le=1000)]] = {}

    @field_validator("queues")
    @classmethod
    def _no_repeats(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        # Names are checked with their exact line in the loader.
        if len(set(value)) != len(value):
            raise ValueError("a queue is listed twice")
        return value


class WorkerSettings(Strict):
    poll_interval_seconds: PositiveSeconds = DEFAULT_POLL_INTERVAL_SECONDS
    shutdown_grace_seconds: NonNegativeSeconds = DEFAULT_SHUTDOWN_GRACE_SECONDS
    heartbeat_interval_seconds: PositiveSeconds = DEFAULT_HEARTBEAT_INTERVAL_SECONDS
    dead_after_seconds: PositiveSeconds = DEFAULT_DEAD_AFTER_SECONDS
    stuck_after_timeout_factor: float = Field(3.0, ge=1.0, allow_inf_nan=False)
    startup_wait_seconds: NonNegativeSeconds = 0.0
    #: How often every worker's reaper looks for jobs of dead workers.
    reap_interval_seconds: PositiveSeconds = DEFAULT_REAP_INTERVAL_SECONDS
    #: A rerun-safe job whose worker died this many times is failed, not requeued
    #: again (a job that kills its worker every time must not take down host after host).
    max_crash_requeues: int = Field(DEFAULT_MAX_CRASH_REQUEUES, ge=0, le=100)
    #: When a NOTIFY does not reach the LISTEN connection (a transaction-mode pooler
    #: in between): ``auto`` says so at ERROR and picks up jobs by polling;
    #: ``required`` refuses to start (exit 2).
    listen: Literal["auto", "required"] = "auto"

    @model_validator(mode="after")
    def _heartbeat_below_dead(self) -> WorkerSettings:
        if self.dead_after_seconds < 3 * self.heartbeat_interval_seconds:
            raise ValueError(
                "dead_after_seconds must be at least 3 x heartbeat_interval_seconds: a "
                "worker's lease (dead_after minus one interval and a clock allowance) "
                "must outlast more than one beat, or live workers would fence themselves"
            )
        return self


class Database(Strict):
    url: str | None = None

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: str | None) -> str | None:
        from jobsys.db.url import EXPECTED_FORM, form_problem

        problem = form_problem(value) if value else None
        if problem:
            raise ValueError(f"{problem}; expected {EXPECTED_FORM}")
        return value


class AppSection(Strict):
    modules: tuple[str, ...] = ()


class Classification(Strict):
    transient: tuple[str, ...] = DEFAULT_TRANSIENT_EXCEPTIONS
    authentication: tuple[str, ...] = ()
    authentication_http_status: tuple[int, ...] = DEFAULT_AUTHENTICATION_HTTP_STATUS
    transient_http_status: tuple[int, ...] = DEFAULT_TRANSIENT_HTTP_STATUS


class Redaction(Strict):
    keys: tuple[str, ...] = DEFAULT_REDACTED_KEYS
    replacement: str = "[REDACTED]"


class QueueThresholds(Strict):
    max_waiting: int = Field(1000, ge=1)
    max_oldest_wait_seconds: PositiveSeconds = 600.0
    max_failure_rate: float = Field(0.5, gt=0, le=1)
    min_finished_for_rate: int = Field(20, ge=1)
    window_seconds: PositiveSeconds = 900.0


class ServiceCheck(Strict):
    url: str
    timeout_seconds: PositiveSeconds = 2.0
    expected_status: int = Field(200, ge=100, le=599)
    failures_before_outage: int = Field(1, ge=1)


class Health(Strict):
    queues: QueueThresholds = QueueThresholds()
    queue_overrides: dict[str, QueueThresholds] = {}
    services: dict[str, ServiceCheck] = {}


class IssuesSection(Strict):
    #: A job_failure issue with no new failure for this long resolves itself.
    auto_resolve_after_seconds: PositiveSeconds = DEFAULT_ISSUE_AUTO_RESOLVE_SECONDS


class AutoRetry(Strict):
    enabled: bool = True
    batch_size: int = Field(100, ge=1, le=10_000)
    max_attempts: int = Field(5, ge=1)
    base_delay_seconds: PositiveSeconds = 30.0
    max_delay_seconds: PositiveSeconds = 3600.0


class RetrySection(Strict):
    transient_max_attempts: int = Field(5, ge=0)
    transient_base_delay_seconds: PositiveSeconds = 2.0
    runtime_max_attempts: int = Field(0, ge=0)
    bulk_chunk_size: int = Field(500, ge=1, le=10_000)
    auto: AutoRetry = AutoRetry()


class Retention(Strict):
    succeeded_after_hours: PositiveSeconds = 24.0 * 7
    failed_after_hours: PositiveSeconds = 24.0 * 30
    cancelled_after_hours: PositiveSeconds = 24.0 * 7
    #: Failure rows (and their retry audit), unless a retry of theirs is pending or
    #: their job still waits or runs.
    failures_after_hours: PositiveSeconds = 24.0 * 30
    #: Schedule ticks and finished fan-out runs (the latest tick of each entry is kept).
    schedule_after_hours: PositiveSeconds = 24.0 * 7
    batch_size: int = Field(5000, ge=1)


DEFAULT_METRICS_TICK_SECONDS = 5.0


class Live(Strict):
    max_notifications_per_second: int = Field(10, ge=1, le=1000)
    #: How often each worker publishes ``dashboard_metrics_changed``.
    metrics_interval_seconds: PositiveSeconds = DEFAULT_METRICS_TICK_SECONDS
    #: Topics of your application (besides the built-in five) ``jobsys events`` accepts.
    extra_topics: tuple[str, ...] = ()

    @field_validator("extra_topics")
    @classmethod
    def _topic_names(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for name in value:
            if not re.match(r"^[a-z][a-z0-9_]{0,62}$", name):
                raise ValueError(f"topic {name!r} must match [a-z][a-z0-9_]{{0,62}}")
        return value


class Metrics(Strict):
    host: str = "127.0.0.1"
    port: int | None = Field(None, ge=1, le=65535)


class Limits(Strict):
    max_args_bytes: int = Field(DEFAULT_MAX_ARGS_BYTES, ge=64)


RATE_RE = re.compile(
    r"^\s*(\d+)\s*/\s*(\d+(?:\.\d+)?)?\s*(s|sec|second|m|min|minute|h|hour|d|day)\s*$"
)
RATE_UNIT_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60,
                     "h": 3600, "hour": 3600, "d": 86400, "day": 86400}  # fmt: skip
RATE_EXAMPLES = "30/m, 5/s, 100/h or 10/30s"
ARG_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def parse_rate(text: str) -> tuple[int, float]:
    """``30/m`` -> (30, 60.0): at most that many starts in any window of that length."""
    match = RATE_RE.match(text)
    if not match:
        raise ValueError(f"rate {text!r} is not N/unit (e.g. {RATE_EXAMPLES})")
    count, span, unit = int(match.group(1)), float(match.group(2) or 1), match.group(3)
    if count < 1 or span <= 0:
        raise ValueError(f"rate {text!r} must allow at least 1 start in a window longer than 0")
    return count, span * RATE_UNIT_SECONDS[unit]


class Throttle(Strict):
    """Flow limits of one queue or task (``throttle`` in queues.yaml)."""

    #: The job argument whose value is the key (e.g. ``account_id``): the limits then
    #: apply to each key on its own; without it, to the queue or task as a whole.
    per_key: str | None = None
    #: At most this many starts in any window of this length, e.g. ``30/m``.
    rate: str | None = None
    #: At most this many running at once.
    concurrency: int | None = Field(None, ge=1, le=100_000)

    @field_validator("rate")
    @classmethod
    def _rate(cls, value: str | None) -> str | None:
        if value is not None:
            parse_rate(value)
        return value

    @field_validator("per_key")
    @classmethod
    def _arg_name(cls, value: str | None) -> str | None:
        if value is not None and not ARG_NAME_RE.match(value):
            raise ValueError(f"{value!r} is not an argument name ([A-Za-z_][A-Za-z0-9_]*)")
        return value

    @model_validator(mode="after")
    def _something(self) -> Throttle:
        if self.rate is None and self.concurrency is None:
            raise ValueError("give rate, concurrency or both")
        return self


class QueuesFile(Strict):
    database: Database = Database()
    app: AppSection = AppSection()
    base: Lane
    capsules: dict[str, Lane] = {}
    worker: WorkerSettings = WorkerSettings()
    classification: Classification = Classification()
    redaction: Redaction = Redaction()
    health: Health = Health()
    issues: IssuesSection = IssuesSection()
    retry: RetrySection = RetrySection()
    retention: Retention = Retention()
    live: Live = Live()
    metrics: Metrics = Metrics()
    limits: Limits = Limits()
    #: Queue or task name -> its flow limits (rate, concurrency, per key).
    throttle: dict[str, Throttle] = {}

    @field_validator("capsules")
    @classmethod
    def _capsule_names(cls, value: dict[str, Lane]) -> dict[str, Lane]:
        for name in value:
            check_name(name)
        if "base" in value:
            raise ValueError("'base' is the base lane; a capsule cannot use that name")
        return value


def unique_key_problems(keys: Iterable[str], names: Collection[str], *, of: str) -> list[str]:
    """Why each of ``keys`` that is not among ``names`` (the argument names a job is
    deferred with; ``of`` says whose) is refused as a unique key (``jobsys.jobs.unique``:
    it would read as null in every job's key, making jobs the same that are not)."""
    shown = ", ".join(sorted(names)) or "none"
    return [
        f"unique key {key!r} is not one of {of} ({shown}){did_you_mean(key, names)}"
        for key in keys
        if key not in names
    ]


def item_arg_names(args: Mapping[str, Any], item_arg: str) -> set[str]:
    """The argument names of a fan-out's item jobs: its static ``args`` and its
    ``item_arg`` (a batch inserts ``{**args, item_arg: id}``, ``jobsys.engine.inserts``)."""
    return {*args, item_arg}


UniqueState = Literal[
    "waiting", "scheduled", "running", "succeeded", "failed", "cancelled", "aborted"
]


class Fanout(Strict):
    table: str
    id_column: str = "id"
    where: str | None = None
    batch_size: int = Field(500, ge=1, le=100_000)
    task: str
    queue: str | None = None
    item_arg: str = "account_id"
    args: dict[str, Any] = {}
    overlap: Literal["skip", "queue"] = "skip"
    #: Queue of the batch jobs; None: the per-item queue, behind the items (backpressure).
    batch_queue: str | None = None
    #: Items' jobs unique (``unique_for: 1h``, as a task's option): an item whose job
    #: still counts is not enqueued again. None: the per-item task's own option, if any.
    unique_for: str | None = None
    #: The args that make two item jobs the same (default: all, the item's id included).
    unique_keys: list[str] | None = None
    #: The states that count (default: waiting, scheduled, running, succeeded).
    unique_states: list[UniqueState] | None = None

    @field_validator("unique_for")
    @classmethod
    def _unique_for(cls, value: str | None) -> str | None:
        from jobsys.errors import UsageError
        from jobsys.timespec import parse_duration

        if value is not None:
            try:
                parse_duration(value, "unique_for")
            except UsageError as exc:
                raise ValueError(str(exc)) from None
        return value

    @field_validator("unique_keys")
    @classmethod
    def _unique_keys_are_item_args(
        cls, value: list[str] | None, info: ValidationInfo
    ) -> list[str] | None:
        if value is not None and "item_arg" in info.data and "args" in info.data:
            names = item_arg_names(info.data["args"], info.data["item_arg"])
            problems = unique_key_problems(value, names, of="the item jobs' arguments")
            if problems:
                raise ValueError("; ".join(problems))
        return value

    @model_validator(mode="after")
    def _unique_needs_a_period(self) -> Fanout:
        if self.unique_for is None and (self.unique_keys or self.unique_states):
            raise ValueError("unique_keys and unique_states need unique_for (a period, e.g. 1h)")
        return self

    @field_validator("table", "id_column")
    @classmethod
    def _identifier(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)?$", value):
            raise ValueError(f"{value!r} is not a plain SQL identifier")
        return value


#: jobsys's own recurring work: task -> what it does. A schedule without an entry for
#: each is refused (``maintenance: optional`` opts out; an explicitly empty schedule
#: runs nothing). ``jobsys.check_service_health`` is required once health.services exist.
MAINTENANCE_TASKS = {
    "jobsys.reap": "recovers jobs of dead workers",
    "jobsys.purge_retention": "deletes finished jobs past `retention`",
    "jobsys.retry_failed_jobs": "retries failed jobs automatically",
    "jobsys.check_queue_health": "opens issues for unhealthy queues",
}
SERVICE_HEALTH_TASK = "jobsys.check_service_health"


class ScheduleEntry(Strict):
    cron: str
    task: str | None = None
    timezone: str | None = None
    args: dict[str, Any] = {}
    queue: str | None = None
    priority: JobPriority | None = None
    enabled: bool = True
    description: str = ""
    fanout: Fanout | None = None

    @model_validator(mode="after")
    def _task_or_fanout(self) -> ScheduleEntry:
        if self.task is None and self.fanout is None:
            raise ValueError("an entry needs a task, or a fanout with its per-item task")
        return self


class ScheduleDefaults(Strict):
    timezone: str = "UTC"
    catch_up: int = Field(1, ge=0, le=1000)


class ScheduleFile(Strict):
    defaults: ScheduleDefaults = ScheduleDefaults()
    entries: dict[str, ScheduleEntry] = {}
    #: A schedule with no entries is refused unless it says so: an empty or truncated
    #: file must not silently drop every recurring job.
    allow_empty: bool = False
    #: ``required``: every maintenance task (:data:`MAINTENANCE_TASKS`) must have an
    #: entry; ``optional``: this schedule runs them elsewhere (or not at all).
    maintenance: Literal["required", "optional"] = "required"

    @field_validator("entries")
    @classmethod
    def _entry_names(cls, value: dict[str, ScheduleEntry]) -> dict[str, ScheduleEntry]:
        for name in value:
            if not re.match(r"^[a-z0-9_]{1,80}$", name):
                raise ValueError(f"entry name {name!r} must match [a-z0-9_]{{1,80}}")
        return value
