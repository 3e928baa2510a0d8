"""The live-events flusher (``jobsys.live.services.EventFlusher``), a Periodic service
woken by changes: a pass sends one NOTIFY per topic, a failed flush is counted, its
changes kept and sent by the next good pass, and what is pending at stop goes out."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from waiting import wait_until_async

from jobsys import clock
from jobsys.live.coalesce import Coalescer
from jobsys.live.services import EventFlusher

Taken = dict[str, dict[str, Any]]


async def test_a_pass_sends_one_notification_per_topic() -> None:
    sent: list[Taken] = []

    async def send(taken: Taken) -> None:
        sent.append(taken)

    coalescer = Coalescer()
    flusher = EventFlusher(max_per_second=10, coalescer=coalescer, send=send)
    assert await flusher.run_pass(None, clock.now()) == 0 and sent == []
    for i in range(5):
        coalescer.add("jobs_changed", {"succeeded": 1, "id": i})
    coalescer.add("issues_changed", {"issue_id": 7})
    assert await flusher.run_pass(None, clock.now()) == 2
    assert sent[0]["jobs_changed"]["succeeded"] == 5
    assert sent[0]["jobs_changed"]["ids"] == [0, 1, 2, 3, 4]
    assert sent[0]["issues_changed"]["issue_ids"] == [7]


async def test_failed_flushes_are_counted_and_their_changes_sent_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    stop = asyncio.Event()
    sent: list[Taken] = []
    failures = [OSError("down"), OSError("still down")]

    async def send(taken: Taken) -> None:
        if failures:
            raise failures.pop(0)
        sent.append(taken)
        stop.set()

    coalescer = Coalescer()
    coalescer.add("jobs_changed", {"failed": 1})
    flusher = EventFlusher(max_per_second=100, coalescer=coalescer, send=send)
    with caplog.at_level(logging.WARNING, logger="jobsys.live.services"):
        await asyncio.wait_for(flusher.run(None, stop), 5)
    errors = [r.__dict__.get("consecutive_errors") for r in caplog.records]
    assert errors == [1, 2]
    assert {r.__dict__.get("action") for r in caplog.records} == {"live_events_error"}
    assert (flusher.passes, flusher.consecutive_errors) == (1, 0)
    assert sent == [{"jobs_changed": {"events": 1, "failed": 1}}]


async def test_a_change_wakes_the_flusher_and_stop_flushes_what_is_left() -> None:
    stop = asyncio.Event()
    sent: list[Taken] = []

    async def send(taken: Taken) -> None:
        sent.append(taken)

    coalescer = Coalescer()
    flusher = EventFlusher(max_per_second=10, coalescer=coalescer, send=send)
    task = asyncio.create_task(flusher.run(None, stop))
    await asyncio.sleep(0)
    coalescer.add("jobs_changed", {"started": 1})
    await wait_until_async(lambda: sent, 5, "the first flush")
    coalescer.add("jobs_changed", {"succeeded": 1})
    stop.set()
    await asyncio.wait_for(task, 5)
    assert [t["jobs_changed"] for t in sent] == [
        {"events": 1, "started": 1},
        {"events": 1, "succeeded": 1},
    ]
    assert coalescer.pending() == {}


def test_an_insert_announces_itself_while_another_thread_imports_the_coalescer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`jobsys demo run --web` (`make run`) failed with "partially initialized module
    'jobsys.live.coalesce' has no attribute 'flusher_running'": the web console's
    thread was importing the module (in sys.modules, its functions not yet defined)
    when the demo's first defer asked whether a flusher runs. None can run yet: the
    insert announces itself."""
    import sys
    import types

    from jobsys.live import publish

    half_imported = types.ModuleType("jobsys.live.coalesce")
    monkeypatch.setitem(sys.modules, "jobsys.live.coalesce", half_imported)
    assert publish.jobs_changed_channel() == publish.CHANNEL
