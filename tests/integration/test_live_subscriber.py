"""The subscriber survives its connection being killed, and the re-read fills the gap."""

from __future__ import annotations

import asyncio
from pathlib import Path

import psycopg
from rt_support import report

from jobsys.live.publish import publish
from jobsys.live.subscriber import APPLICATION_NAME, Backoff, Event, Lost, Synced, subscribe

TERMINATIONS = 5


async def _issue_count(conn: psycopg.AsyncConnection) -> int:  # type: ignore[type-arg]
    cur = await conn.execute("SELECT count(*) FROM jobsys_issues")
    row = await cur.fetchone()
    assert row is not None
    return int(row[0])


def test_terminated_five_times_events_keep_arriving_nothing_missed(db_url: str) -> None:
    async def scenario() -> None:
        reader = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        admin = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        writer = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        view = -1  # what a screen following the subscriber shows
        syncs: list[Synced] = []
        events_between: list[int] = [0]
        lost = 0
        written = 0
        done = asyncio.Event()

        async def consume() -> None:
            nonlocal view, lost
            async for message in subscribe(
                db_url,
                topics=["issues_changed"],
                backoff=Backoff(initial=0.3, maximum=0.3),
                keepalive_seconds=0.5,
            ):
                if isinstance(message, Synced):
                    syncs.append(message)
                    events_between.append(0)
                    view = await _issue_count(reader)  # LISTEN is on: read now
                elif isinstance(message, Event):
                    events_between[-1] += 1
                    view = await _issue_count(reader)
                elif isinstance(message, Lost):
                    lost += 1
                if done.is_set() and view == written:
                    return

        async def produce(n: int) -> None:
            nonlocal written
            for _ in range(n):
                async with writer.transaction():
                    await writer.execute(
                        "INSERT INTO jobsys_issues (fingerprint, kind, title) "
                        "VALUES (gen_random_uuid()::text, 'job_failure', 'x')"
                    )
                    await publish(writer, "issues_changed", {"opened": 1})
                    # Counted before the commit: the consumer may read the new row as
                    # soon as the commit's notification lands, before this task resumes,
                    # and it stops only when what it shows equals what was written.
                    written += 1
                await asyncio.sleep(0.01)

        consumer = asyncio.create_task(consume())
        while not syncs:
            await asyncio.sleep(0.01)
        for round_ in range(TERMINATIONS):
            await produce(10)
            # Kill the subscriber's backend while changes keep coming.
            lost_before = lost
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database()",
                (APPLICATION_NAME,),
            )
            while lost == lost_before:
                await asyncio.sleep(0.005)
            await produce(5)  # while disconnected (the backoff is at least 0.24 s)
            # Nothing is published after the kill: only the re-read can show those rows.
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 10
            while len(syncs) < round_ + 2 or view != written:
                assert loop.time() < deadline, f"no re-read: view {view}, written {written}"
                await asyncio.sleep(0.01)
            assert events_between[-1] == 0  # the view came from the re-read, not an event
        await produce(10)
        done.set()
        await produce(1)  # one more event so the consumer checks `done`
        await asyncio.wait_for(consumer, timeout=10)

        report(
            "live-subscriber-terminated",
            terminations=TERMINATIONS,
            reconnects=sum(s.reconnected for s in syncs),
            events_written=written,
            shown=view,
            missed=written - view,
        )
        assert lost >= TERMINATIONS
        assert len(syncs) == TERMINATIONS + 1
        assert [s.reconnected for s in syncs] == [False] + [True] * TERMINATIONS
        assert len({s.backend_pid for s in syncs}) == TERMINATIONS + 1
        # Events arrived on every connection, the last included.
        assert all(count > 0 for count in events_between[1:]), events_between
        assert view == written == await _issue_count(reader)
        for conn in (reader, admin, writer):
            await conn.close()

    asyncio.run(asyncio.wait_for(scenario(), timeout=60))


def test_events_command_survives_termination(db_url: str, tmp_path: Path) -> None:
    from live_support import EventsProcess

    proc = EventsProcess(db_url, tmp_path / "home", "--topic", "issues_changed")
    try:
        proc.wait_ready()
        with psycopg.connect(db_url, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = %s AND datname = current_database()",
                (APPLICATION_NAME,),
            )
            resync = proc.wait_for(lambda e: True)
            assert resync["topic"] == "resync"
            conn.execute(
                'SELECT pg_notify(\'jobsys_events\', \'{"topic":"issues_changed","id":3}\')'
            )
            event = proc.wait_for(lambda e: True)
            assert event["topic"] == "issues_changed" and event["data"] == {"id": 3}
    finally:
        assert proc.stop() == 0
    assert any("reconnected" in line for line in proc.stderr)


def test_batched_reads_deliver_every_event_in_fewer_wakeups(db_url: str) -> None:
    """``batch_seconds``: the first event after a quiet spell comes at once; a stream of
    them arrives a read at a time, each read closed by ``Drained``, none lost."""
    from jobsys.live.subscriber import Drained

    sent = 60

    async def scenario() -> tuple[list[int], int, float]:
        writer = await psycopg.AsyncConnection.connect(db_url, autocommit=True)
        seen: list[int] = []
        drains = 0
        first_after = -1.0
        started = asyncio.Event()
        loop = asyncio.get_running_loop()

        async def consume() -> None:
            nonlocal drains, first_after
            async for message in subscribe(db_url, topics=["jobs_changed"], batch_seconds=0.5):
                if isinstance(message, Synced):
                    started.set()
                elif isinstance(message, Event):
                    if not seen:
                        first_after = loop.time() - published_at
                    seen.append(int(message.data["n"]))
                elif isinstance(message, Drained):
                    drains += 1
                if len(seen) == sent:
                    return

        consumer = asyncio.create_task(consume())
        await asyncio.wait_for(started.wait(), 10)
        published_at = loop.time()
        for n in range(sent):  # 200 a second for 0.3 s
            await publish(writer, "jobs_changed", {"n": n})
            await asyncio.sleep(0.005)
        await asyncio.wait_for(consumer, 10)
        await writer.close()
        return seen, drains, first_after

    seen, drains, first_after = asyncio.run(scenario())
    assert seen == list(range(sent))  # every event, in order
    assert drains < sent / 6  # reads gathered several events each (0.3 s of events)
    assert first_after < 0.4  # the first one was not held back by the 0.5 s batch
