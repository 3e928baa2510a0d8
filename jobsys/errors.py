"""The one exception tree of jobsys.

Every operator-facing error derives from :class:`JobsysError`. A class docstring is
its default message; ``exit_code`` is what the CLI exits with (see README, "Exit
codes"). Driver errors are translated into these at the edge (``jobsys.db``), so no
caller ever sees a psycopg traceback.

Task-side exceptions (:class:`AuthenticationError`, :class:`TransientError`) are a
separate family: task code raises them to tell jobsys how to classify a failure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime

from jobsys.clock import utc_text

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_PARTIAL = 3
EXIT_DB_UNAVAILABLE = 69


class JobsysError(Exception):
    """jobsys failed."""

    exit_code = EXIT_FAILED

    def __init__(self, message: str | None = None, *, hint: str | None = None) -> None:
        self.message = message or (self.__doc__ or "").strip()
        self.hint = hint
        super().__init__(self.message)

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class UsageError(JobsysError):
    """The command was called with invalid input."""

    exit_code = EXIT_USAGE


class ConfigError(JobsysError):
    """The configuration is invalid.

    ``runs_check``: ``hint`` tells the operator to run ``jobsys config check``, which
    a check's own output leaves out (``jobsys.cli._output.problems_found``): the
    operator is running one.
    """

    exit_code = EXIT_USAGE

    def __init__(
        self, problems: Sequence[str], *, hint: str | None = None, runs_check: bool = False
    ) -> None:
        self.problems = list(problems)
        self.runs_check = runs_check
        count = len(self.problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(self.problems), hint=hint)


class RefusedError(JobsysError):
    """The operation was refused."""

    exit_code = EXIT_USAGE


class AlreadyQueuedError(RefusedError):
    """A job with the same queueing lock is already waiting; nothing was deferred.

    ``job_id`` and ``task``: that waiting job, when it could be read after the refusal
    (None when it started or went meanwhile)."""

    def __init__(
        self,
        message: str | None = None,
        *,
        hint: str | None = None,
        job_id: int | None = None,
        task: str | None = None,
    ) -> None:
        self.job_id = job_id
        self.task = task
        super().__init__(message, hint=hint)


def already_queued(lock: str, waiting: tuple[int, str] | None) -> AlreadyQueuedError:
    """The refusal of a defer whose queueing lock ``lock`` is taken, naming the job
    ``waiting`` under it (id, task; None: it started or went before it could be read)."""
    if waiting is None:
        return AlreadyQueuedError(
            f"a job with queueing lock {lock!r} was waiting in the queue; nothing was "
            "deferred (that job has started or gone since)",
            hint="Defer again: the lock takes a new job once none waits under it.",
        )
    job_id, task = waiting
    return AlreadyQueuedError(
        f"job {job_id} ({task}) is already waiting in the queue with queueing lock "
        f"{lock!r}; nothing was deferred",
        hint=f"See it with `jobsys jobs show {job_id}`. Wait for it to start, cancel it "
        f"(`jobsys jobs cancel {job_id}`), or defer without a queueing lock.",
        job_id=job_id,
        task=task,
    )


def unchanged(
    subject: str, state: str, *, who: str | None = None, at: datetime | None = None
) -> str:
    """What an action that found ``subject`` so already says (not an error: it exits
    0), and who made it so, so a colleague a second later is told the work is done:
    ``issue 16 is already resolved (by alice at 2026-12-06 03:12 UTC); nothing was
    changed``. One wording for the issue actions and the schedule's pause and resume,
    in the CLI, the web console and the dashboard."""
    when = f"at {utc_text(at)}" if at is not None else ""
    why = " ".join(part for part in (who, when) if part)
    return f"{subject} is {state}{f' ({why})' if why else ''}; nothing was changed"


class NotFoundError(JobsysError):
    """The requested object does not exist."""

    exit_code = EXIT_FAILED


def not_found(
    what: str, ident: object, *, listed_by: str, then: str | None = None
) -> NotFoundError:
    """The one form of "that id does not exist": ``no failure 999.`` (with ``then``, what
    follows from it: ``no failure 999; nothing was retried.``) and the command that
    lists them: ``List them with `jobsys failures list`.``"""
    return NotFoundError(
        f"no {what} {ident}{'; ' + then if then else ''}.",
        hint=f"List them with `{listed_by}`.",
    )


def parse_id(raw: str | int, thing: str, *, listed_by: str, flag: str | None = None) -> int:
    """An id an operator gave (a CLI argument or option, a web console query value, a
    filter): a whole number from 1. Anything else gets the one form of "that is not an
    id" (UsageError, exit 2): the option first when there is one, the kind of id and
    the command that lists them: ``--issue 'x' is not an issue id: issue ids are whole
    numbers from 1.`` ``List them with `jobsys issues list`.``"""
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        article = "an" if thing[0] in "aeiou" else "a"
        given = f"{flag} " if flag else ""
        raise UsageError(
            f"{given}{str(raw)!r} is not {article} {thing} id: {thing} ids are whole numbers"
            " from 1.",
            hint=f"List them with `{listed_by}`.",
        )
    return value


class PartialFailure(JobsysError):
    """Some of the requested operations were refused."""

    exit_code = EXIT_PARTIAL


class DatabaseUnavailable(JobsysError):
    """The database cannot be reached."""

    exit_code = EXIT_DB_UNAVAILABLE


class ConnectionLost(DatabaseUnavailable):
    """The connection to the database was lost while a statement ran: the server may
    have committed it (a defer: the job may have been inserted)."""


class SchemaError(JobsysError):
    """The database schema does not match this version of jobsys."""

    exit_code = EXIT_USAGE


class EmbeddedServerError(JobsysError):
    """The embedded PostgreSQL server could not be managed."""

    exit_code = EXIT_FAILED


# --- Task-side exceptions: raised by task code to steer classification -------------


class TaskError(Exception):
    """Base of the exceptions task code raises to classify a failure."""

    #: Name of a configured service this failure depends on (joins its outage issue).
    service: str | None = None

    def __init__(self, message: str = "", *, service: str | None = None) -> None:
        super().__init__(message)
        if service is not None:
            self.service = service


class JobTimeoutError(TaskError):
    """The job ran past its timeout and was cancelled (failure reason ``timeout``)."""


class AuthenticationError(TaskError):
    """The account must re-authenticate. Never retried: retrying burns the account."""


class TransientError(TaskError):
    """A passing problem (network, rate limit, service down). Retried with backoff."""


#: How alike a name must be to a choice to be suggested (difflib's ratio, 0..1).
SUGGEST_CUTOFF = 0.6


def close_matches(word: str, choices: Iterable[str], *, n: int = 3) -> list[str]:
    """The (at most ``n``) ``choices`` closest to ``word``, best first: the one
    "did you mean" of jobsys.

    Names are compared on what follows the words they start with in common, so that a
    shared namespace does not make unrelated names look alike (``demo.nosuch`` is not
    close to ``demo.ai_ocr``); the words of that rest also match in any order
    (``demo.download_story`` finds ``demo.story.download``)."""
    scored = []
    for choice in dict.fromkeys(choices):
        score = _likeness(word, choice)
        if score >= SUGGEST_CUTOFF:
            scored.append((-score, choice))
    return [choice for _, choice in sorted(scored)[:n]]


def _likeness(word: str, choice: str) -> float:
    """0..1: how alike two names are past their common leading words (split at ``.``,
    ``_`` and ``-``): the best of the rests' difflib ratio and of the share of their
    words that match one another (in any order, each allowing a typo)."""
    import difflib
    import re

    ours = [w for w in re.split(r"[._\-]+", word.lower()) if w] or [word]
    theirs = [w for w in re.split(r"[._\-]+", choice.lower()) if w] or [choice]
    shared = 0
    while shared < min(len(ours), len(theirs)) - 1 and ours[shared] == theirs[shared]:
        shared += 1
    ours, theirs = ours[shared:], theirs[shared:]
    as_text = difflib.SequenceMatcher(None, " ".join(ours), " ".join(theirs)).ratio()
    unmatched = list(theirs)
    for w in ours:
        hit = next(
            (t for t in unmatched if difflib.SequenceMatcher(None, w, t).ratio() >= 0.8), None
        )
        if hit is not None:
            unmatched.remove(hit)
    matched = len(theirs) - len(unmatched)
    return max(as_text, 2 * matched / (len(ours) + len(theirs)))


def suggestion(word: str, choices: Iterable[str], *, n: int = 3) -> str | None:
    """``Did you mean 'x'?`` (a hint) for the closest of ``choices``, or None."""
    close = close_matches(word, choices, n=n)
    return f"Did you mean {', '.join(repr(c) for c in close)}?" if close else None


def did_you_mean(word: str, choices: Iterable[str], *, n: int = 3) -> str:
    """`` (did you mean 'x'?)`` for the ``n`` closest of ``choices``, or an empty string."""
    close = close_matches(word, choices, n=n)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
