"""Classification of a failure: its kind, whether it may be retried, its reason and the
service it depends on. Pure: no I/O, only the exception, the task spec and the
``classification`` section of ``queues.yaml``.

Precedence (safest first): authentication beats transient beats runtime, so an
exception that matches both an authentication and a transient rule is never retried.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from jobsys import engine
from jobsys.errors import AuthenticationError, JobTimeoutError, TransientError

if TYPE_CHECKING:
    from jobsys.config.models import Classification
    from jobsys.tasks import TaskSpec

AUTHENTICATION = "authentication"
TRANSIENT = "transient"
RUNTIME = "runtime"
KINDS = (AUTHENTICATION, TRANSIENT, RUNTIME)

#: Names under which Procrastinate reports aborts (cancelled async task, aborted sync task).
ABORT_CLASSES = ("asyncio.exceptions.CancelledError", engine.JOB_ABORTED_CLASS)


@dataclass(frozen=True)
class Verdict:
    kind: str
    retryable: bool
    reason: str = "exception"
    service: str | None = None


def dotted_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def class_names(exc: BaseException) -> set[str]:
    """Every dotted name the exception answers to, through its MRO (subclasses match)."""
    names = set()
    for cls in type(exc).__mro__:
        names.add(dotted_name(cls))
        # ``asyncio.TimeoutError`` is ``builtins.TimeoutError`` since 3.11, and
        # ``socket.timeout`` too: accept the short public spelling people write.
        names.add(f"{cls.__module__.split('.')[0]}.{cls.__qualname__}")
    return names


def http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries (``.status_code``, ``.status``, ``.response``)."""
    candidates = [
        getattr(exc, "status_code", None),
        getattr(exc, "status", None),
        getattr(getattr(exc, "response", None), "status_code", None),
    ]
    for value in candidates:
        if isinstance(value, int) and not isinstance(value, bool) and 100 <= value <= 599:
            return value
    return None


def service_of(exc: BaseException, spec: TaskSpec | None) -> str | None:
    service = getattr(exc, "service", None)
    if isinstance(service, str) and service:
        return service
    return spec.service if spec is not None else None


def is_abort(exc: BaseException, names: set[str] | None = None) -> bool:
    return not (class_names(exc) if names is None else names).isdisjoint(ABORT_CLASSES)


def classify(exc: BaseException, spec: TaskSpec | None, rules: Classification) -> Verdict:
    """The verdict for ``exc`` raised by the task ``spec`` (None: unknown task)."""
    service = service_of(exc, spec)
    if isinstance(exc, AuthenticationError):
        return Verdict(AUTHENTICATION, False, service=service)
    if isinstance(exc, JobTimeoutError):
        return Verdict(TRANSIENT, True, reason="timeout", service=service)
    if isinstance(exc, TransientError):
        return Verdict(TRANSIENT, True, service=service)
    names = class_names(exc)
    if is_abort(exc, names):
        return Verdict(TRANSIENT, True, reason="aborted", service=service)
    status = http_status(exc)
    if names & set(rules.authentication) or (
        status is not None and status in rules.authentication_http_status
    ):
        return Verdict(AUTHENTICATION, False, service=service)
    if names & set(rules.transient) or (
        status is not None and status in rules.transient_http_status
    ):
        return Verdict(TRANSIENT, True, service=service)
    return Verdict(RUNTIME, True, service=service)
