"""Standard streams whose reader may go away: the two low-level moves every writer of
stdout and stderr shares (the CLI's broken-pipe rule, ``jobsys/cli/_pipe.py``, and
the worker's log handler, ``jobsys/lanes/logs.py``).

- :func:`write` writes all of a text: on an unbuffered stream (``PYTHONUNBUFFERED=1``,
  which the systemd units jobsys renders set) Python's text layer drops silently what
  a short write to a pipe did not pass; here the rest is written again, so a reader
  that went away shows as ``BrokenPipeError`` instead of a quiet loss.
- :func:`to_devnull` points a stream's file descriptor at ``/dev/null`` once its pipe
  broke (the Python documentation's "Note on SIGPIPE"): nothing fails again, now or
  at interpreter shutdown.
- :class:`Unbroken` is a stream (stderr, a log handler's) whose broken pipe is no
  error: log output is not what a worker or a console is for, so losing its reader
  (``jobsys worker 2>&1 | head``, a log shipper that died) must not stop it.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import select
from typing import Any


def write(stream: Any, text: str) -> None:
    """Write ``text`` to ``stream`` whole; an ``OSError`` (``EPIPE``) is raised as the
    stream raises it."""
    raw = getattr(stream, "buffer", None)
    if not (isinstance(raw, io.RawIOBase) and getattr(stream, "write_through", False)):
        stream.write(text)  # buffered: BufferedWriter writes all of it, or raises
        return
    # Unbuffered: TextIOWrapper hands the bytes to the raw file once and ignores how
    # many it took (a pipe whose reader closes mid-write takes a part, without error).
    data = memoryview(text.encode(stream.encoding, stream.errors or "strict"))
    while data:
        written = raw.write(data)
        if written is None:  # a non-blocking descriptor that is full: wait, not drop
            select.select([], [raw.fileno()], [])
            continue
        data = data[written:]


def to_devnull(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null: what it still buffers (and
    anything written later) goes there, and the flush at exit cannot fail."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(devnull, stream.fileno())
        finally:
            os.close(devnull)


def is_broken_pipe(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno == errno.EPIPE


class Unbroken:
    """``stream``, but once its reader went away (``EPIPE``) its descriptor goes to
    /dev/null and the write counts as done: it never raises for a broken pipe. Other
    errors (a full disk) are raised as before."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        try:
            write(self._stream, text)
        except OSError as exc:
            self._broke(exc)
        return len(text)

    def writelines(self, lines: Any) -> None:
        for text in lines:
            self.write(text)

    def flush(self) -> None:
        try:
            self._stream.flush()
        except OSError as exc:
            self._broke(exc)

    def _broke(self, exc: OSError) -> None:
        """The pipe broke (else ``exc`` is raised): to /dev/null, then :meth:`on_broken`."""
        if not is_broken_pipe(exc):
            raise exc
        to_devnull(self._stream)
        self.on_broken()

    def on_broken(self) -> None:
        """What else a broken pipe does (nothing: the writer carries on)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def unbroken(stream: Any) -> Unbroken:
    """``stream`` as an :class:`Unbroken` (itself when it is one already)."""
    return stream if isinstance(stream, Unbroken) else Unbroken(stream)
