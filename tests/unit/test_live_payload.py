import json

import pytest

from jobsys.live.publish import MAX_PAYLOAD_BYTES, UnknownTopic, payload


def test_payload_keeps_ids_and_counts_only() -> None:
    text = payload(
        "jobs_changed", {"ids": [1, 2], "count": 2, "args": {"password": "x"}, "queue": "sync"}
    )
    assert json.loads(text) == {"topic": "jobs_changed", "ids": [1, 2], "count": 2, "queue": "sync"}


def test_payload_is_bounded() -> None:
    text = payload("jobs_changed", {"ids": list(range(10_000)), "count": 10_000})
    assert len(text.encode()) <= MAX_PAYLOAD_BYTES
    assert json.loads(text) == {"topic": "jobs_changed", "count": 10_000, "truncated": True}


def test_bad_topic() -> None:
    with pytest.raises(UnknownTopic):
        payload("Bad Topic")
