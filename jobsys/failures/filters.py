"""The failure filter of ``jobsys failures list`` and ``jobsys retry --all``. Pure.

One type and one validation, so "the failures I listed" and "the failures I retry"
are the same set (``jobsys.failures.store.where_clause`` turns it into SQL). Every
value is checked before any query runs (bad input exits 2 and touches nothing); the
values only ever reach SQL as bound parameters.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

from jobsys.errors import UsageError, did_you_mean, parse_id
from jobsys.failures.classify import KINDS
from jobsys.timespec import parse_time

MAX_LIMIT = 10_000
GROUP_BY = ("fingerprint", "task", "queue", "kind", "issue")
#: Groups count the newest this many matching failures (15-80 ms at 1,000,000;
#: counting them all takes seconds), and say so; ``all`` counts every one. The same
#: window for ``failures list --group-by`` and the web console's group view.
GROUP_WINDOW = 5_000


@dataclass(frozen=True)
class FailureFilter:
    kind: str | None = None
    task: str | None = None
    queue: str | None = None
    lane: str | None = None
    account: str | None = None
    profile: str | None = None
    issue: int | None = None
    since: datetime | None = None
    until: datetime | None = None
    retryable: bool | None = None
    before: int | None = None
    #: Case-insensitive substring of the message or the error class (taken literally:
    #: ``%`` and ``_`` are not wildcards).
    error: str | None = None

    def params(self) -> dict[str, Any]:
        """The filters that are set, as bound parameters (and for messages and JSON)."""
        return {
            f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None
        }

    def is_empty(self) -> bool:
        return not self.params()


#: The ids the failures filters (``issue``, ``before``) and a retry (``failure``) take:
#: the kind of id and the command that lists them.
ID_VALUES = {
    "issue": ("issue", "jobsys issues list"),
    "before": ("failure", "jobsys failures list"),
    "failure": ("failure", "jobsys failures list"),
}


def id_value(name: str, raw: str | int | None) -> int | None:
    """The id ``name`` (a key of :data:`ID_VALUES`) as given (None: not given), refused
    as the CLI's id options refuse a bad one: ``--issue 'x' is not an issue id: issue
    ids are whole numbers from 1.`` and the command that lists them. The web console's
    query values and the filters say what the CLI says."""
    if raw is None:
        return None
    thing, listed_by = ID_VALUES[name]
    return parse_id(raw, thing, listed_by=listed_by, flag=f"--{name}")


def failure_filters(
    *,
    kind: str | None = None,
    task: str | None = None,
    queue: str | None = None,
    lane: str | None = None,
    account: str | None = None,
    profile: str | None = None,
    issue: int | None = None,
    since: str | None = None,
    until: str | None = None,
    retryable: bool | None = None,
    before: int | None = None,
    error: str | None = None,
    now: datetime | None = None,
) -> FailureFilter:
    """Validate raw option values into a :class:`FailureFilter` (UsageError, exit 2)."""
    now = now or datetime.now(UTC)
    if kind is not None and kind not in KINDS:
        raise UsageError(
            f"--kind {kind!r} is not a failure kind{did_you_mean(kind, KINDS)}.",
            hint=f"Use one of {', '.join(KINDS)}.",
        )
    issue = id_value("issue", issue)
    before = id_value("before", before)
    start = parse_time(since, "--since", now) if since is not None else None
    end = parse_time(until, "--until", now) if until is not None else None
    if start is not None and end is not None and start >= end:
        raise UsageError("--since must be before --until.")
    for option, text in (
        ("--task", task),
        ("--queue", queue),
        ("--lane", lane),
        ("--account", account),
        ("--profile", profile),
        ("--error", error),
    ):
        if text is None:
            continue
        if not text.strip():
            raise UsageError(f"{option} must not be empty.")
        if len(text) > 1000 or "\x00" in text:
            raise UsageError(f"{option}: give a value without NUL, under 1000 characters.")
    return FailureFilter(
        kind=kind,
        task=task,
        queue=queue,
        lane=lane,
        account=account,
        profile=profile,
        issue=issue,
        since=start,
        until=end,
        retryable=retryable,
        before=before,
        error=error,
    )


def narrowed(
    flt: FailureFilter,
    *,
    profile: str | None = None,
    retryable: bool | None = None,
    before: int | None = None,
) -> FailureFilter:
    """``flt`` with the filters ``failures list`` takes beyond ``retry --all``'s,
    checked as :func:`failure_filters` checks them."""
    more = failure_filters(profile=profile, retryable=retryable, before=before)
    return replace(flt, **more.params())


def unknown_names(flt: FailureFilter, queues: Iterable[str], lanes: Iterable[str]) -> list[str]:
    """A note for each ``--queue``/``--lane`` that names no configured queue or lane, so
    that at 3 a.m. a typo does not read as "no failures". Notes, not errors, for
    listing: failures of a queue since removed from the configuration stay findable.
    ``retry --all`` refuses instead (:func:`check_names`): nothing could run there."""
    notes = []
    for option, value, known in (("--queue", flt.queue, queues), ("--lane", flt.lane, lanes)):
        names = list(known)
        if value is not None and value not in names:
            notes.append(
                f"{option} {value!r} is not a configured {option[2:]}"
                f"{did_you_mean(value, names)}; configured: {', '.join(names)}"
            )
    return notes


def check_names(flt: FailureFilter, queues: Iterable[str], lanes: Iterable[str]) -> None:
    """:func:`unknown_names` as a usage error (exit 2)."""
    notes = unknown_names(flt, queues, lanes)
    if notes:
        raise UsageError(notes[0] + ".")


def check_limit(limit: int) -> int:
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit: {limit} is out of range.", hint=f"Use 1 to {MAX_LIMIT}.")
    return limit


def check_window(raw: str | None) -> int | None:
    """How many of the newest matching failures a group view counts (None: all of
    them): nothing (or "") for the newest :data:`GROUP_WINDOW`, ``all`` for every one."""
    if raw is None or raw == "":
        return GROUP_WINDOW
    if raw == "all":
        return None
    raise UsageError(
        f"--window {raw!r}: leave it out (the newest {GROUP_WINDOW:,} failures) or give all."
    )


def check_group_by(group_by: str | None) -> str | None:
    if group_by is not None and group_by not in GROUP_BY:
        raise UsageError(f"--group-by: {group_by!r} is not one of {', '.join(GROUP_BY)}.")
    return group_by
