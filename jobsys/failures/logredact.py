"""Keeping secrets out of logs: a ``logging.Filter`` for every handler.

Procrastinate logs each job's call string (``task[id](password='...')``) and the
exception of a failed job, and attaches the job's arguments as ``extra``. The filter
redacts those arguments and scrubs the secret values they hold from the message and
the formatted exception, before any handler writes the record.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from jobsys.failures.redaction import Redactor

if TYPE_CHECKING:
    from jobsys.config import Config


class RedactingFilter(logging.Filter):
    def __init__(self, redactor: Redactor) -> None:
        super().__init__("")
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        job = getattr(record, "job", None)
        jobs = getattr(record, "jobs", None)  # "About to defer N jobs" carries a list
        found = [j for j in ([job] if job is not None else []) + list(jobs or []) if _has_args(j)]
        if not found:
            return True
        secrets = [s for j in found for s in self.redactor.secrets_in(j["task_kwargs"])]
        if isinstance(job, dict):
            record.job = self._clean_job(job, secrets)
        if isinstance(jobs, list):
            record.jobs = [self._clean_job(j, secrets) if _has_args(j) else j for j in jobs]
        if not secrets:
            return True
        record.msg = self.redactor.scrub(record.getMessage(), secrets)
        record.args = None
        if record.exc_info:
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redactor.scrub(text, secrets)
            record.exc_info = None
        for key in ("exception", "result"):
            value = getattr(record, key, None)
            if isinstance(value, str):
                setattr(record, key, self.redactor.scrub(value, secrets))
        return True

    def _clean_job(self, job: dict[str, Any], secrets: list[str]) -> dict[str, Any]:
        clean = dict(job)
        clean["task_kwargs"] = self.redactor.redact(job["task_kwargs"])
        if isinstance(clean.get("call_string"), str):
            clean["call_string"] = self.redactor.scrub(clean["call_string"], secrets)
        return clean


def _has_args(job: Any) -> bool:
    return isinstance(job, dict) and bool(job.get("task_kwargs"))


def install(config: Config, logger: logging.Logger | None = None) -> RedactingFilter:
    """Add the filter to every handler of ``logger`` (default: root), once each."""
    redactor = Redactor.for_config(config)
    target = logger or logging.getLogger()
    flt = RedactingFilter(redactor)
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(flt)
    return flt
