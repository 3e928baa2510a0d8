"""Tracebacks stored by capture: what ``traceback.format_exception`` prints, without
the ``^^^^`` position markers (``jobsys.failures.capture.format_traceback``)."""

from __future__ import annotations

import re
import traceback
from collections.abc import Callable

import pytest

from jobsys.failures.capture import format_traceback

_MARKERS = re.compile(r"^ *[~^]+ *$")


def _standard_without_markers(exc: BaseException) -> str:
    text = "".join(traceback.format_exception(exc))
    return "\n".join(line for line in text.split("\n") if not _MARKERS.match(line))


def _raised(make: Callable[[], object]) -> BaseException:
    try:
        make()
    except BaseException as exc:
        return exc
    raise AssertionError("did not raise")


def _cause() -> None:
    try:
        {}["missing"]
    except KeyError as exc:
        raise ValueError("wrapped") from exc


def _context() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        [][1]


def _suppressed() -> None:
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        raise KeyError("k") from None


def _noted() -> None:
    exc = ValueError("with a note")
    exc.add_note("a note")
    raise exc


def _recursion(n: int = 0) -> int:
    return _recursion(n + 1)


def _group() -> None:
    raise ExceptionGroup("g", [ValueError("x")])


def _loop() -> BaseException:
    first, second = ValueError("a"), TypeError("b")
    first.__context__, second.__context__ = second, first
    return first


@pytest.mark.parametrize(
    "exc",
    [
        _raised(_cause),
        _raised(_context),
        _raised(_suppressed),
        _raised(_noted),
        _raised(_recursion),  # "[Previous line repeated N more times]"
        RuntimeError("never raised, no traceback"),
        _loop(),
    ],
    ids=["cause", "context", "suppressed", "note", "recursion", "unraised", "loop"],
)
def test_same_text_as_the_standard_library_without_markers(exc: BaseException) -> None:
    assert format_traceback(exc) == _standard_without_markers(exc)


def test_no_position_markers() -> None:
    text = format_traceback(_raised(_cause))
    assert "Traceback (most recent call last):" in text
    assert 'raise ValueError("wrapped") from exc' in text
    assert not any(_MARKERS.match(line) for line in text.splitlines())


def test_exception_groups_keep_the_standard_format() -> None:
    exc = _raised(_group)
    assert format_traceback(exc) == "".join(traceback.format_exception(exc))
