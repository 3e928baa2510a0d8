"""Worker logging: standard ``logging``, a stable ``action`` per event, text or JSON.

``--log-format json`` writes one JSON object per line (journald, log shippers).
Job arguments never reach a log line whole: Procrastinate puts them in its messages
(``task[12](password='...')``) and in its ``job`` extra, so a filter rewrites both
with redacted, length-bounded arguments, and scrubs the secret values from the
message and traceback too (a task that echoes a token in its error must not leak it).
"""

from __future__ import annotations

import json
import logging
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, Literal

from jobsys import engine, streams
from jobsys.failures.redaction import Redactor

LogFormat = Literal["text", "json"]
MAX_ARGS_CHARS = 200  # longest argument text in a log line
MAX_FIELD_CHARS = 2000  # longest value of any other extra field
_STANDARD_ATTRS = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def bounded(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def safe_call_string(job: dict[str, Any], redactor: Redactor) -> str:
    kwargs = redactor.redact(job.get("task_kwargs") or {})
    inner = ", ".join(f"{key}={value!r}" for key, value in kwargs.items())
    return f"{job.get('task_name')}[{job.get('id')}]({bounded(inner, MAX_ARGS_CHARS)})"


class RedactJobArgs(logging.Filter):
    """Rewrites job arguments in records (Procrastinate's and ours) before any handler."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        job = getattr(record, "job", None)
        if not isinstance(job, dict) or "task_kwargs" not in job:
            return True
        raw_kwargs = job.get("task_kwargs") or {}
        secrets = self.redactor.secrets_in(raw_kwargs)
        safe = safe_call_string(job, self.redactor)
        message = record.getMessage()
        if job.get("call_string"):
            message = message.replace(str(job["call_string"]), safe)
        record.msg, record.args = self.redactor.scrub(message, secrets), None
        record.job = {
            "id": job.get("id"),
            "task": job.get("task_name"),
            "queue": job.get("queue"),
            "attempts": job.get("attempts"),
            "call": safe,
        }
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info))
            record.exc_text = self.redactor.scrub(text, secrets).rstrip("\n")
            record.exc_info = None
        return True


#: Per-job routine events: at thousands of jobs per second they would drown the
#: journal. Shown with --debug; failures, retries and aborts always show.
ROUTINE_ACTIONS = frozenset({"start_job", "job_success", "loaded_job_info", "finish_task"})


#: Procrastinate logs every failed job with its traceback; failure capture stores it
#: (``jobsys failures show``), so without --debug the log keeps one line per failure.
JOB_ERROR_ACTIONS = frozenset({"job_error", "job_error_retry"})


#: A background service's failure: its message names the error; the traceback is
#: for --debug.
SERVICE_ERROR_ACTIONS = frozenset({"service_failed", "service_lost"})


class QuietRoutineJobs(logging.Filter):
    def __init__(self, debug: bool) -> None:
        super().__init__()
        self.debug = debug

    def filter(self, record: logging.LogRecord) -> bool:
        if self.debug:
            return True
        action = getattr(record, "action", None)
        if action in JOB_ERROR_ACTIONS and record.exc_info:
            error = record.exc_info[1]
            record.msg = (
                f"{record.getMessage()} - {type(error).__name__}: {error}"[: 4 * MAX_FIELD_CHARS]
                + " (traceback: `jobsys failures list`)"
            )
            record.args = None
            record.exc_info = None
            record.exc_text = None
        if action in SERVICE_ERROR_ACTIONS:
            record.exc_info = None
            record.exc_text = None
        return action not in ROUTINE_ACTIONS


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, action, message, then extras."""

    def format(self, record: logging.LogRecord) -> str:
        body: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat().replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "action": getattr(record, "action", None),
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key in _STANDARD_ATTRS or key in body or key.startswith("_"):
                continue
            body[key] = value
        if record.exc_info and record.exc_info[1] is not None:
            body["traceback"] = self.formatException(record.exc_info)
        elif record.exc_text:
            body["traceback"] = record.exc_text
        text = json.dumps(body, default=str, ensure_ascii=False)
        if len(text) > 8 * MAX_FIELD_CHARS:  # never a runaway line
            body = {k: bounded(str(v), MAX_FIELD_CHARS) for k, v in body.items()}
            text = json.dumps(body, ensure_ascii=False)
        return text


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s [%(action)s] %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        if not hasattr(record, "action"):
            record.action = "-"
        return super().format(record)


def configure(fmt: LogFormat, redactor: Redactor, *, debug: bool = False) -> None:
    """Route ``jobsys`` and Procrastinate logs to stderr in ``fmt``.

    A reader of stderr that goes away (``jobsys worker 2>&1 | head``, a log shipper
    that died) is no error: the records go to /dev/null from then on. A log call is
    made from anywhere, inside a job's run too: it must not raise there."""
    handler = logging.StreamHandler(streams.unbroken(sys.stderr))
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(QuietRoutineJobs(debug))
    handler.addFilter(RedactJobArgs(redactor))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_jobsys", False):
            root.removeHandler(old)
    handler._jobsys = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    logging.getLogger(engine.LOGGER).setLevel(logging.DEBUG if debug else logging.INFO)
    # Procrastinate's worker logs every job start and end at INFO: building those
    # records costs measurable throughput and they would drown the journal. Without
    # --debug only its warnings and errors (failed jobs) pass; retries and failures
    # are recorded in full by failure capture, lane events by jobsys's own loggers.
    logging.getLogger(engine.WORKER_LOGGER).setLevel(logging.DEBUG if debug else logging.WARNING)
    logging.getLogger("psycopg").setLevel(logging.WARNING)
