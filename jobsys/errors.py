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
    """The configuration is invalid."""

    exit_code = EXIT_USAGE

    def __init__(self, problems: Sequence[str], *, hint: str | None = None) -> None:
        self.problems = list(problems)
        count = len(self.problems)
        head = f"{count} configuration problem{'s' if count != 1 else ''}"
        super().__init__(head + ":\n" + "\n".join(self.problems), hint=hint)


class RefusedError(JobsysError):
    """The operation was refused."""

    exit_code = EXIT_USAGE


class AlreadyQueuedError(RefusedError):
    """A job with the same queueing lock is already waiting; nothing was deferred."""


class NotFoundError(JobsysError):
    """The requested object does not exist."""

    exit_code = EXIT_FAILED


class PartialFailure(JobsysError):
    """Some of the requested operations were refused."""

    exit_code = EXIT_PARTIAL


class DatabaseUnavailable(JobsysError):
    """The database cannot be reached."""

    exit_code = EXIT_DB_UNAVAILABLE


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


def did_you_mean(word: str, choices: Iterable[str], *, n: int = 3) -> str:
    """`` (did you mean 'x'?)`` for the ``n`` closest of ``choices``, or an empty string."""
    import difflib

    close = difflib.get_close_matches(word, list(choices), n=n, cutoff=0.6)
    return f" (did you mean {', '.join(repr(c) for c in close)}?)" if close else ""
