"""jobsys.streams: a broken pipe under a stream that must not break (stderr, the
worker's log handler), and whole writes on an unbuffered stream (PYTHONUNBUFFERED=1)."""

from __future__ import annotations

import io
import logging
import os
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from jobsys import streams
from jobsys.failures.redaction import Redactor
from jobsys.lanes import logs


@pytest.fixture
def closed_pipe() -> Iterator[Any]:
    """A text stream on a pipe whose reader is gone, unbuffered as under
    PYTHONUNBUFFERED=1: every write meets EPIPE."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    stream = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=True)
    yield stream
    stream.close()


def test_unbroken_drops_the_writes_once_the_reader_went_away(closed_pipe: Any) -> None:
    with pytest.raises(BrokenPipeError):
        closed_pipe.write("raw\n")
    quiet = streams.Unbroken(closed_pipe)
    assert quiet.write("lost\n") == 5
    quiet.flush()
    # The descriptor is /dev/null now: the raw stream writes without an error too.
    assert closed_pipe.write("gone\n") == 5
    assert os.path.samefile(f"/proc/self/fd/{closed_pipe.fileno()}", os.devnull)


def test_unbroken_raises_other_errors() -> None:
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        streams.Unbroken(Full()).write("x")


def test_the_worker_log_handler_never_fails_for_a_broken_stderr(
    closed_pipe: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Outside the CLI too (run_worker called from Python): no exception, no "---
    Logging error ---" per record; the records go to /dev/null."""
    errors: list[logging.LogRecord] = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: errors.append(record))
    monkeypatch.setattr(sys, "stderr", closed_pipe)
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        logs.configure("text", Redactor(), debug=True)
        for _ in range(3):
            logging.getLogger("jobsys.test").info("nobody reads this")
        assert errors == []
        assert os.path.samefile(f"/proc/self/fd/{closed_pipe.fileno()}", os.devnull)
    finally:
        for handler in root.handlers[:]:
            if getattr(handler, "_jobsys", False):
                root.removeHandler(handler)
        for handler in before[0]:
            if handler not in root.handlers:
                root.addHandler(handler)
        root.setLevel(before[1])


class _ShortWrites(io.RawIOBase):
    """A raw file that takes at most 3 bytes a write (a pipe under pressure)."""

    def __init__(self) -> None:
        self.got = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self.got += bytes(data[:3])
        return min(3, len(data))


def test_an_unbuffered_stream_is_written_whole() -> None:
    raw = _ShortWrites()
    stream = io.TextIOWrapper(raw, encoding="utf-8", write_through=True)  # type: ignore[arg-type]
    stream.write("dropped?\n")
    assert raw.got == b"dro"  # Python's text layer: the rest is silently lost
    raw.got = b""
    streams.write(stream, "all of it, é\n")
    assert raw.got == "all of it, é\n".encode()
