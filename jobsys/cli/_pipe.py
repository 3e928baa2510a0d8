"""What a command does when the reader of its output goes away (``jobsys jobs list |
head -3``, ``less`` quit early): the one rule of every command (README, "Exit codes").

- A command that only shows something stops at once, quietly (no traceback, no
  message), with exit status 141 (128 + SIGPIPE: what git and coreutils report, as
  the shell sees them killed by SIGPIPE), when the reader of its stdout goes away.
  The output was cut: 141 says so honestly, and a script under ``set -o pipefail``
  sees it as it would for ``git log | head``.
- A command that changed something and committed it (it said so with
  :func:`committed`) is not reported as failed because its report was cut: the rest
  of the report is dropped, the command ends with its own status (0, or 3 when
  partly done), and stderr (still open) says once that the output was cut and the
  command completed. Exit 141 there would read "the retry failed" to an operator
  who piped ``jobsys retry --all --yes`` into ``head``.
- A command that serves until stopped (``worker``, ``web``, ``demo run``: they said
  so with :func:`serving`) never stops because its output's reader went away: what
  it writes is logs (uvicorn's access log goes to stdout), not its product.
- A broken stderr never stops any command (``2>&1 | head``, a ``tee`` that died):
  it is chatter and logs, and a worker's log record written from inside a job's run
  must not end the job or the worker. Its descriptor goes to /dev/null.
- Live streams (``jobsys events``) notice the reader going away within
  :data:`CHECK_SECONDS` (:func:`while_read`), instead of when the next event comes:
  stdout is their product, so they stop (141) as a read does.

Python ignores SIGPIPE, so a write to a closed pipe raises ``BrokenPipeError``; the
data still buffered would raise again at interpreter shutdown ("Exception ignored
... BrokenPipeError"). Once the pipe is broken, the stream's file descriptor is
pointed at ``/dev/null`` (``jobsys.streams``), so nothing more fails, now or at exit.
With ``PYTHONUNBUFFERED=1`` the writes go through ``jobsys.streams.write``, which
writes what a short write left (Python's text layer drops it): the next write
meets the broken pipe, so a cut read is 141 there too.
"""

from __future__ import annotations

import contextlib
import select
import sys
from collections.abc import Awaitable, Iterator
from typing import TypeVar

from jobsys import streams

T = TypeVar("T")

#: Exit status of a command whose output was cut: 128 + SIGPIPE, as git and coreutils.
EXIT_OUTPUT_CUT = 141
#: How often a live stream checks that someone still reads its stdout (seconds).
CHECK_SECONDS = 0.2
#: What stderr says when the report of a command that went on to the end was cut
#: (with the exit status). It claims no change: a duplicate defer, a resume of an
#: entry not paused or ``db upgrade`` at head changed nothing.
CUT_BUT_COMPLETED = (
    "note: stdout was closed before the output ended; the command completed (exit {status})"
)


class OutputClosed(BaseException):
    """The reader of stdout went away before a command that changed nothing ended.

    A BaseException, as KeyboardInterrupt is: a command's ``except Exception`` (a
    stream that survives a bad event, say) must not swallow it and run on."""


class _State:
    committed = False
    serving = False
    cut = False


_state = _State()


def committed() -> None:
    """Say that this command's change is committed: from here on stdout carries only
    its report, and a reader going away does not stop the command (see the module)."""
    _state.committed = True


def serving() -> None:
    """Say that this command serves until stopped (a worker, the web console): a
    reader of its output going away never stops it (see the module)."""
    _state.serving = True


class _Guarded(streams.Unbroken):
    """``sys.stdout`` while a command runs: the real stream, but a broken pipe follows
    the module's rule instead of raising ``BrokenPipeError`` where it was written."""

    def on_broken(self) -> None:
        _state.cut = True
        if not (_state.committed or _state.serving):
            raise OutputClosed from None


@contextlib.contextmanager
def guarded() -> Iterator[None]:
    """Run a command under the rule: ``sys.stdout`` guarded, ``sys.stderr`` never
    broken, and stdout flushed at the end (a small output sits in its buffer until
    then, and a pipe closed early breaks only there)."""
    _state.committed = _state.cut = _state.serving = False
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Guarded(out), streams.unbroken(err)
    try:
        yield
        sys.stdout.flush()
    finally:
        if isinstance(sys.stdout, _Guarded):
            sys.stdout = out
        if isinstance(sys.stderr, streams.Unbroken):
            sys.stderr = err


def exit_status(status: int) -> int:
    """A command's exit status under the rule, once it ended (normally or by an
    error): after a committed change whose report was cut, its own, said on stderr."""
    if _state.cut and _state.committed:
        try:
            sys.stderr.write(CUT_BUT_COMPLETED.format(status=status) + "\n")
            sys.stderr.flush()
        except OSError:  # stderr went into the same closed pipe (2>&1 | head)
            streams.to_devnull(sys.stderr)
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
                streams.to_devnull(sys.stdout)
                raise OutputClosed
            await asyncio.wait({task}, timeout=CHECK_SECONDS)
        return task.result()
    finally:
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
