"""``validate.serialize_args`` checks plain arguments without walking their key paths
(``_plain``) and encodes them with a C encoder built once: the text and every refusal
must be those of the walk followed by ``json``'s encoder, the path it had before."""

from __future__ import annotations

import enum
import json
from collections import OrderedDict
from typing import Any

import pytest

from jobsys.errors import UsageError
from jobsys.jobs import validate


class Kind(enum.IntEnum):
    SYNC = 3


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth):
        value = {"a": value}
    return value


def _listed(depth: int) -> dict[str, Any]:
    value: Any = 1
    for _ in range(depth):
        value = [value]
    return {"a": value}


CASES: list[Any] = [
    {},
    {"account_id": 12345, "kind": "sync", "note": "abc"},
    {"f": 1.5, "t": True, "n": None, "l": [1, "x", [2.0, {"k": False}]]},
    {"é": "ünïcode ✓", "quote": 'a"b\\c\n\t'},
    {"seconds": float("nan")},
    {"deep": [1, float("-inf")]},
    {"tag": ("a", "b")},
    {"tag": {"deep": [{1: "x"}]}},
    {"k": "a\x00b"},
    {"a\x00": 1},
    {"p": "\ud800"},
    {"x": [{"\udfff": 1}]},
    {"kind": Kind.SYNC},
    {"ordered": OrderedDict(a=1)},
    {"when": object()},
    _nested(63),
    _nested(64),
    _nested(65),
    _listed(63),
    _listed(64),
    _listed(65),
]


def _reference(args: Any, max_bytes: int) -> str:
    """What ``serialize_args`` did before the fast path: the walk, then ``json``."""
    validate._walk(args, "args", 0)
    text = validate._ENCODER.encode(args)
    size = len(text.encode())
    if size > max_bytes:
        raise UsageError(f"args: {size} bytes")
    return text


@pytest.mark.parametrize("args", CASES, ids=range(len(CASES)))
def test_the_same_text_and_the_same_refusal_as_the_walk(args: Any) -> None:
    try:
        expected: str | BaseException = _reference(args, 1 << 20)
    except (UsageError, UnicodeEncodeError) as exc:
        expected = exc
    if isinstance(expected, str):
        assert validate.serialize_args(args, max_bytes=1 << 20) == expected
        assert json.loads(expected) is not None
    else:
        with pytest.raises(type(expected)) as got:
            validate.serialize_args(args, max_bytes=1 << 20)
        assert str(got.value) == str(expected)


def test_plain_passes_only_what_the_walk_passes_but_lone_surrogates() -> None:
    passed = 0
    for args in CASES:
        if not validate._plain(args, 0):
            continue
        passed += 1
        text = validate._ENCODER.encode(args)
        try:
            validate._walk(args, "args", 0)
        except UsageError as exc:
            assert "lone surrogate" in str(exc)
            with pytest.raises(UnicodeEncodeError):
                text.encode()
    assert passed >= 8


def test_size_limit_of_ascii_text() -> None:
    assert validate.check_args({"a": "e" * 10}, max_bytes=19) == 19
    with pytest.raises(UsageError, match="args: 19 bytes of JSON, more than the limit of 18"):
        validate.serialize_args({"a": "e" * 10}, max_bytes=18)
