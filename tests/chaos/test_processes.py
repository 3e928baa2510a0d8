"""Process faults against real ``jobsys worker`` processes and the effect ledger:
kill -9 mid-job, a graceful drain longer than the stall threshold, and a PostgreSQL
restart under load (every acknowledged defer completes)."""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path
from typing import Literal

import psycopg
import pytest
from harness import (
    Worker,
    busy_worker_and_a_peer,
    create_ledger,
    defer,
    ledger,
    overlaps,
    query,
    requeue_times,
    throwaway_server,
    wait_until,
    write_config,
)
from rt_support import report

from jobsys.db import embedded

#: A short lease so the scenarios stay quick: dead after 6 s, a beat every second.
SHORT = {"heartbeat": 1.0, "dead_after": 6.0, "reap": 1.0}


def _succeeded(url: str) -> int:
    return int(
        query(url, "SELECT count(*) FROM procrastinate_jobs WHERE status = 'succeeded'")[0][0]
    )


#: The killed worker's host clock 90 s behind, the reaping worker's 90 s ahead: the
#: reaper judges a worker dead by the database's clock, so neither may move the verdict.
CLOCK_OFFSETS_S = (-90.0, 90.0)


def _server_log(home: Path) -> str:
    log = embedded.pgdata(home) / "log"
    files = sorted(log.rglob("*")) if log.is_dir() else [log]
    return "".join(f.read_text(errors="replace") for f in files if f.is_file())


def test_kill_9_mid_job_recovered_once_no_overlap(db_url: str, tmp_path: Path) -> None:
    config = write_config(tmp_path, **SHORT)
    with busy_worker_and_a_peer(
        tmp_path, db_url, db_url, config, seconds=600, clock_offsets_s=CLOCK_OFFSETS_S
    ) as (a, _, jobs):
        a.proc.send_signal(signal.SIGKILL)
        killed_at = time.time()
        wait_until(lambda: _succeeded(db_url) == len(jobs), 60, "every job recovered")
        done_at = time.time()
        runs = ledger(db_url)
        bad = overlaps(runs, {a.pid: killed_at})
        requeues = requeue_times(db_url)
        report(
            "kill-9-mid-job",
            clock_offset_killed_s=CLOCK_OFFSETS_S[0],
            clock_offset_reaper_s=CLOCK_OFFSETS_S[1],
            kill_to_first_requeue_s=min(requeues) - killed_at,
            kill_to_all_done_s=done_at - killed_at,
            runs=len(runs),
            reruns=len(runs) - len(jobs),
            overlaps=len(bad),
            duplicates_completed=len([r for r in runs if r.ended_at is not None]) - len(jobs),
        )
        assert bad == []
        assert len(requeues) == len(jobs)
        # The lease rule under skewed host clocks: no requeue before the database saw A
        # silent for dead_after (its last beat was at most about a beat before the kill;
        # half of dead_after leaves room for a beat delayed by a loaded machine).
        assert min(requeues) - killed_at >= SHORT["dead_after"] / 2
        # Each job completed exactly once (the killed runs never ended).
        assert sorted(r.job_id for r in runs if r.ended_at is not None) == sorted(jobs)


def test_graceful_drain_longer_than_the_stall_threshold(db_url: str, tmp_path: Path) -> None:
    """SIGTERM while jobs run for longer than ``dead_after``: the draining worker keeps
    beating, so no reaper takes its jobs; each job runs once and the worker exits 0."""
    create_ledger(db_url)
    config = write_config(tmp_path, **SHORT)
    queues = config / "queues.yaml"
    queues.write_text(
        queues.read_text().replace("shutdown_grace_seconds: 5", "shutdown_grace_seconds: 30")
    )
    with busy_worker_and_a_peer(tmp_path, db_url, db_url, config, seconds=10) as (a, _, jobs):
        a.proc.send_signal(signal.SIGTERM)
        term_at = time.time()
        wait_until(lambda: a.exited_at is not None, 60, "A to drain")
        assert a.exited_at is not None
        wait_until(lambda: _succeeded(db_url) == len(jobs), 30, "every job")
        runs = ledger(db_url)
        report(
            "graceful-drain-past-dead-after",
            drain_s=a.exited_at - term_at,
            dead_after_s=SHORT["dead_after"],
            exit_a=a.proc.returncode,
            runs=len(runs),
            reruns=len(runs) - len(jobs),
            requeues=len(requeue_times(db_url)),
        )
        assert a.exited_at - term_at > SHORT["dead_after"]
        assert a.proc.returncode == 0, a.output()[-3000:]
        assert len(runs) == len(jobs) and requeue_times(db_url) == []
        assert {r.pid for r in runs} == {a.pid}


@pytest.mark.parametrize(
    "mode",
    [
        "fast",
        # A crash restart (the server replays its WAL). In the slow tier: the fast tier
        # is already close to its 8-minute budget on a loaded machine.
        pytest.param("immediate", marks=pytest.mark.soak),
    ],
)
def test_postgres_restart_under_load_every_acknowledged_defer_completes(
    tmp_path: Path, mode: Literal["fast", "immediate"]
) -> None:
    with throwaway_server() as (home, url):
        create_ledger(url)
        config = write_config(tmp_path, concurrency=8)
        workers = [Worker(n, tmp_path, url, url, config) for n in ("a", "b")]
        acknowledged: list[int] = []
        refused = 0
        stop = threading.Event()

        def deferrer() -> None:
            nonlocal refused
            while not stop.is_set():
                try:
                    acknowledged.extend(defer(url, 1, seconds=0.05))
                except psycopg.OperationalError:
                    refused += 1  # not acknowledged: the client knows and may retry
                    time.sleep(0.1)
                time.sleep(0.02)

        try:
            for w in workers:
                w.wait_ready()
            thread = threading.Thread(target=deferrer, daemon=True)
            thread.start()
            wait_until(lambda: len(acknowledged) >= 50, 30, "load")
            down_at = time.time()
            embedded.stop(home, mode=mode)
            time.sleep(2.0)
            assert embedded.start(home).running
            up_at = time.time()
            time.sleep(5.0)
            stop.set()
            thread.join(30)
            wait_until(
                lambda: (
                    query(
                        url,
                        "SELECT count(*) FROM procrastinate_jobs "
                        "WHERE id = ANY(%s) AND status = 'succeeded'",
                        (acknowledged,),
                    )[0][0]
                    == len(acknowledged)
                ),
                90,
                "every acknowledged job to succeed",
            )
            done_at = time.time()
            runs = ledger(url)
            completed = [r for r in runs if r.ended_at is not None]
            report(
                f"postgres-restart-under-load-{mode}",
                restart_s=up_at - down_at,
                acknowledged=len(acknowledged),
                refused_during_restart=refused,
                lost=len(set(acknowledged) - {r.job_id for r in completed}),
                duplicates=len(completed) - len({r.job_id for r in completed}),
                up_to_all_done_s=done_at - up_at,
                worker_exits=sum(not w.alive() for w in workers),
            )
            if mode == "immediate":
                # It was a crash: the server replayed its WAL when it came back.
                assert "automatic recovery in progress" in _server_log(home)
            # Every acknowledged defer completed exactly once: none lost, none twice.
            assert {r.job_id for r in completed} >= set(acknowledged)
            assert len(completed) == len({r.job_id for r in completed})
            assert overlaps(runs, {}) == []
            for w in workers:
                assert w.alive(), w.output()[-3000:]
        finally:
            stop.set()
            for w in workers:
                w.stop()
