"""``defer``/``defer_many`` take their placement options as ``**options``
(``DeferOptions``/``DeferManyOptions``): a keyword they do not declare is still refused
as Python refuses one, before anything is planned."""

from __future__ import annotations

from typing import Any

import pytest

from jobsys.jobs import defer


def test_an_unknown_option_is_refused_as_an_unexpected_keyword() -> None:
    options: dict[str, Any] = {"queu": "default"}
    with pytest.raises(TypeError, match=r"^defer\(\) got an unexpected keyword argument 'queu'$"):
        defer.plan(None, "demo.process_account", [{}], **options)


def test_defer_many_takes_no_queueing_lock() -> None:
    options: dict[str, Any] = {"queueing_lock": "one"}
    with pytest.raises(
        TypeError, match=r"^defer_many\(\) got an unexpected keyword argument 'queueing_lock'$"
    ):
        defer.plan(None, "demo.process_account", [{}], many=True, **options)


def test_the_options_are_declared_once() -> None:
    assert set(defer.DeferOptions.__optional_keys__) == {
        "queue",
        "schedule_at",
        "schedule_in",
        "lock",
        "queueing_lock",
        "priority",
    }
    assert set(defer.DeferManyOptions.__optional_keys__) == (
        defer.DeferOptions.__optional_keys__ - {"queueing_lock"}
    )
