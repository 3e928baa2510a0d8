"""A worker survives a PostgreSQL restart: the LISTEN connection comes back and jobs
deferred afterwards start promptly (NOTIFY, not the 30 s poll). The producer pool
(``jobsys.defer`` without a connection) replaces the connections the restart closed
without failing a defer.

Uses a throwaway embedded server that the test starts, restarts and stops itself,
never the shared one.
"""

from __future__ import annotations

import time
from pathlib import Path

from rt_support import (
    WorkerProcess,
    defer_rows,
    environment,
    events,
    query,
    wait_until,
    write_app,
)

from jobsys.db import embedded, migrate


def test_worker_relistens_after_a_postgres_restart(throwaway_server, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    home, url = throwaway_server
    migrate.upgrade(url)
    # A restart takes a few seconds: with the default lease (dead after 30 s) the
    # worker rides it out. (Cut off for longer than dead_after - heartbeat_interval,
    # it would fence itself with exit 75: tests/integration/test_fencing.py.)
    config_dir = write_app(tmp_path, poll=30, heartbeat=1, dead_after=30)
    env = environment(tmp_path, url, config_dir)
    listeners = "SELECT pid FROM pg_stat_activity WHERE application_name = 'jobsys-listener'"
    worker = WorkerProcess(env, tmp_path, "--lane", "base")
    try:
        worker.wait_for_output("worker_ready")
        (old_pid,) = wait_until(lambda: query(url, listeners), 10, "a LISTEN backend")[0]

        embedded.stop(home)
        assert not embedded.status(home).running
        time.sleep(1.0)  # the worker notices: listener, heartbeat and lanes lose the server
        assert embedded.start(home).running

        # Within seconds a LISTEN backend exists again (a new one: the server restarted).
        try:
            new = wait_until(
                lambda: [r for r in query(url, listeners) if r[0] != old_pid],
                20,
                "a new LISTEN backend",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{worker.output()}") from None
        assert len(new) == 1
        worker.wait_for_output("listener_restored", timeout=20)
        assert worker.proc.poll() is None, worker.output()  # survived, not crashed
        time.sleep(0.5)  # the LISTEN statements of the new connection
        deferred_at = time.time()
        defer_rows(url, "rt.sleep", "q_base", [{"tag": "after-restart"}])
        started = wait_until(
            lambda: [e for e in events(tmp_path) if e[:2] == ("start", "after-restart")],
            20,
            "pickup after the restart",
        )
        # Polling is every 30 s: a pickup within 3 s came from NOTIFY.
        assert started[0][2] - deferred_at < 3.0, worker.output()
        worker.signal()
        assert worker.wait(30) == 0, worker.output()
        assert query(url, "SELECT status::text FROM procrastinate_jobs") == [("succeeded",)]
    finally:
        worker.kill()


def test_producer_pool_defers_after_a_postgres_restart(  # type: ignore[no-untyped-def]
    throwaway_server, tmp_path: Path, monkeypatch
) -> None:
    """The producer pool's idle connections died with the server: after the restart
    the next defers run on new connections, none fails with ConnectionLost (they were
    sent on no connection that broke). It used to fail one defer per pooled
    connection, each saying the job may have been inserted."""
    import asyncio
    import importlib
    import sys

    import jobsys
    from jobsys.config import load
    from jobsys.db import producers
    from jobsys.jobs import defer

    home, url = throwaway_server
    migrate.upgrade(url)
    env = environment(tmp_path, url, write_app(tmp_path, poll=30))
    monkeypatch.setenv("RT_LOG", env["RT_LOG"])
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.import_module("rt_tasks")
    defer.configure(load(Path(env["JOBSYS_CONFIG_DIR"])), url=url)

    async def scenario() -> list[int]:
        # Three connections idle in the pool, then the server restarts under them.
        held = asyncio.Event()

        async def hold(conn: object) -> None:
            await held.wait()

        holders = [asyncio.ensure_future(producers.run(url, hold)) for _ in range(3)]
        await asyncio.sleep(0.2)
        held.set()
        await asyncio.gather(*holders)
        await jobsys.defer("rt.sleep", {"tag": "before"})
        assert producers.open_connections() == 3
        await asyncio.to_thread(embedded.stop, home)
        assert (await asyncio.to_thread(embedded.start, home)).running
        return [await jobsys.defer("rt.sleep", {"tag": f"a{n}"}) for n in range(5)]

    try:
        assert len(asyncio.run(scenario())) == 5
    finally:
        producers.close()
        defer.deactivate()
        from jobsys import tasks

        for name in [n for n in tasks.registry() if n.startswith("rt.")]:
            tasks.unregister(name)
        sys.modules.pop("rt_tasks", None)
    assert query(url, "SELECT count(*) FROM procrastinate_jobs") == [(6,)]
