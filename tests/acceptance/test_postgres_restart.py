"""A worker survives a PostgreSQL restart: the LISTEN connection comes back and jobs
deferred afterwards start promptly (NOTIFY, not the 30 s poll).

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
