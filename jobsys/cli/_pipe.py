"""What a command does when the reader of its output goes away (``jobsys jobs list |
head -3``, ``less`` quit early): the one rule of every command (README, "Exit codes").

- A command that only shows something stops at once, quietly (no traceback, no
  message), with exit status 141 (128 + SIGPIPE: what git and coreutils report, as
  the shell sees them killed by SIGPIPE). The output was cut: 141 says so honestly,
  and a script under ``set -o pipefail`` sees it as it would for ``git log | head``.
- A command that changed something and committed it (it said so with
  :func:`committed`) is not reported as failed because its report was cut: the rest
  of the report is dropped, the command ends with its own status (0, or 3 when
  partly done), and stderr (still open) says once that the output was cut after the
  change was committed. Exit 141 there would read "the retry failed" to an operator
  who piped ``jobsys retry --all --yes`` into ``head``.
- Live streams (``jobsys events``) notice the reader going away within
  :data:`CHECK_SECONDS` (:func:`while_read`), instead of when the next event comes.

Python ignores SIGPIPE, so a write to a closed pipe raises ``BrokenPipeError``; the
data still buffered would raise again at interpreter shutdown ("Exception ignored
... BrokenPipeError"). Once the pipe is broken, the stream's file descriptor is
pointed at ``/dev/null`` (the Python documentation's "Note on SIGPIPE"), so nothing
more fails, now or at exit. Stderr follows the same rule as stdout: when it breaks
(``2>&1 | head``), nobody reads the command any more either.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import sys
from collections.abc import Awaitable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

#: Exit status of a command whose output was cut: 128 + SIGPIPE, as git and coreutils.
EXIT_OUTPUT_CUT = 141
#: How often a live stream checks that someone still reads its stdout (seconds).
CHECK_SECONDS = 0.2
#: What stderr says when a committed change's report was cut (with the exit status).
CUT_AFTER_COMMIT = (
    "note: stdout was closed before the output ended; what the command changed is "
    "committed (exit {status})"
)


class OutputClosed(BaseException):
    """The reader of stdout (or stderr) went away before a command that changed
    nothing ended.

    A BaseException, as KeyboardInterrupt is: a command's ``except Exception`` (a
    stream that survives a bad event, say) must not swallow it and run on."""


class _State:
    committed = False
    cut = False


_state = _State()


def committed() -> None:
    """Say that this command's change is committed: from here on stdout carries only
    its report, and a reader going away does not stop the command (see the module)."""
    _state.committed = True


class _Guarded:
    """``sys.stdout`` (``sys.stderr``) while a command runs: the real stream, but a
    broken pipe follows the module's rule instead of raising ``BrokenPipeError`` where
    it was written."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            return int(self._stream.write(text))
        except OSError as exc:
            _broken(exc, self._stream)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for text in lines:
            self.write(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            _broken(exc, self._stream)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _broken(exc: OSError, stream: Any) -> None:
    """A write or flush of ``stream`` failed: re-raised unless the pipe is broken; else
    the stream goes to /dev/null, and a command that committed nothing stops."""
    if exc.errno != errno.EPIPE:
        raise exc
    _state.cut = True
    _to_devnull(stream)
    if not _state.committed:
        raise OutputClosed from None


def _to_devnull(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what it still buffers (and
    anything written later) goes there, and the flush at exit cannot fail."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run a command under the rule: ``sys.stdout`` and ``sys.stderr`` guarded, and
    stdout flushed at the end (a small output sits in its buffer until then, and a
    pipe closed early breaks only there)."""
    _state.committed = _state.cut = False
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Guarded(out), _Guarded(err)
    try:
        yield
        sys.stdout.flush()
    finally:
        if isinstance(sys.stdout, _Guarded):
            sys.stdout = out
        if isinstance(sys.stderr, _Guarded):
            sys.stderr = err


def exit_status(status: int) -> int:
    """A command's exit status under the rule, once it ended (normally or by an
    error): after a committed change whose report was cut, its own, said on stderr."""
    if _state.cut and _state.committed:
        try:
            sys.stderr.write(CUT_AFTER_COMMIT.format(status=status) + "\n")
            sys.stderr.flush()
        except OSError:  # stderr went into the same closed pipe (2>&1 | head)
            _to_devnull(sys.stderr)
    return status


def _reader_gone(fd: int) -> bool:
    """Whether nobody reads ``fd`` any more (a pipe whose reader closed reports POLLERR,
    a socket POLLHUP; a terminal or a file never does)."""
    poller = select.poll()
    poller.register(fd, 0)  # no event asked: only POLLERR, POLLHUP, POLLNVAL come back
    return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))


async def while_read(work: Awaitable[T]) -> T:
    """``work`` (a live stream that writes only when something happens), stopped with
    :class:`OutputClosed` within :data:`CHECK_SECONDS` of its reader going away."""
    import asyncio

    try:
        fd = sys.stdout.fileno()
    except (OSError, ValueError, AttributeError):  # no file descriptor: nothing to watch
        return await work
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            if _reader_gone(fd):
                _state.cut = True
                _to_devnull(sys.stdout)
                raise OutputClosed
            await asyncio.wait({task}, timeout=CHECK_SECONDS)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
