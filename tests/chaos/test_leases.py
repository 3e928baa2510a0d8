"""The lease under partition and outage, with real worker processes.

Worker A reaches PostgreSQL through a :class:`ChaosProxy`; worker B connects
directly and its reaper is the one that may take A for dead. Every run of a task
writes a row of the effect ledger (job, process, start, end), straight to the
database. No job may ever run in two processes at once; A must fence before B's
reaper requeues; outages shorter than the lease's slack are ridden out.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from chaos_proxy import ChaosProxy
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

EXIT_FENCED = 75


def _all_succeeded(url: str, jobs: list[int]) -> bool:
    rows = query(
        url,
        "SELECT count(*) FROM procrastinate_jobs WHERE id = ANY(%s) AND status = 'succeeded'",
        (jobs,),
    )
    return rows[0][0] == len(jobs)


def _cut_off_and_recovered(
    db_url: str,
    tmp_path: Path,
    *,
    cut: str,
    heartbeat: float,
    dead_after: float,
    reap: float,
    outage: float | None,
    scenario: str,
) -> None:
    """A runs 4 long jobs behind the proxy; the proxy is cut (``freeze`` or ``drop``);
    A must fence (exit 75) before B's reaper requeues, and no run may overlap."""
    config = write_config(tmp_path, heartbeat=heartbeat, dead_after=dead_after, reap=reap)
    with (
        ChaosProxy(db_url) as proxy,
        busy_worker_and_a_peer(tmp_path, proxy.url, db_url, config, seconds=600) as (a, b, jobs),
    ):
        getattr(proxy, cut)()
        cut_at = time.time()
        wait_until(lambda: a.exited_at is not None, dead_after + 30, "A to fence")
        if outage is not None:
            time.sleep(max(0.0, cut_at + outage - time.time()))
            proxy.pass_()
        wait_until(lambda: _all_succeeded(db_url, jobs), dead_after + 60, "the reruns")
        runs = ledger(db_url)
        bad = overlaps(runs, {a.pid: a.exited_at})
        requeues = requeue_times(db_url)
        assert a.exited_at is not None
        report(
            scenario,
            cut_at=cut_at,
            fence_at=a.exited_at,
            first_requeue_at=min(requeues),
            fence_to_requeue_s=min(requeues) - a.exited_at,
            cut_to_fence_s=a.exited_at - cut_at,
            overlaps=len(bad),
            runs=len(runs),
            reruns=len(runs) - len(jobs),
            exit_a=a.proc.returncode,
        )
        assert a.proc.returncode == EXIT_FENCED, a.output()
        assert '"action": "fenced"' in a.output()
        assert bad == [], bad
        assert len(requeues) == len(jobs)
        # The fence strictly before the reaper's first requeue.
        assert a.exited_at < min(requeues), (a.exited_at, requeues)
        assert b.alive(), b.output()


@pytest.mark.parametrize("repetition", [1, 2, 3, 4, 5])
def test_network_freeze_fences_before_requeue_no_overlap(
    db_url: str, tmp_path: Path, repetition: int
) -> None:
    """The frozen proxy of the fault run (packets held, nothing refused or reset),
    with a short lease (heartbeat 1 s, dead after 6 s) so five repetitions stay quick."""
    _cut_off_and_recovered(
        db_url,
        tmp_path,
        cut="freeze",
        heartbeat=1.0,
        dead_after=6.0,
        reap=1.0,
        outage=None,
        scenario=f"network-freeze#{repetition}",
    )


def test_network_freeze_with_the_default_lease(db_url: str, tmp_path: Path) -> None:
    """The same freeze with jobsys's defaults (heartbeat 2 s, dead after 30 s)."""
    _cut_off_and_recovered(
        db_url,
        tmp_path,
        cut="freeze",
        heartbeat=2.0,
        dead_after=30.0,
        reap=5.0,
        outage=None,
        scenario="network-freeze-default-lease",
    )


def test_worker_cut_off_60s_fences_before_requeue(db_url: str, tmp_path: Path) -> None:
    """Default lease (heartbeat 2 s, dead after 30 s): A's connections dropped and
    refused for 60 s."""
    _cut_off_and_recovered(
        db_url,
        tmp_path,
        cut="drop",
        heartbeat=2.0,
        dead_after=30.0,
        reap=5.0,
        outage=60.0,
        scenario="outage-60s-worker-cut-off",
    )


@pytest.mark.parametrize("outage", [10.0, 20.0])
def test_database_outage_shorter_than_the_lease_is_ridden_out(
    tmp_path: Path, outage: float
) -> None:
    """Default lease; the whole server stopped for ``outage`` seconds under two
    workers with 8 running jobs: no exit, no rerun, every job succeeds once."""
    with throwaway_server() as (home, url):
        create_ledger(url)
        config = write_config(tmp_path)
        workers = [Worker(n, tmp_path, url, url, config) for n in ("a", "b")]
        try:
            for w in workers:
                w.wait_ready()
            jobs = defer(url, 8, seconds=outage + 15)
            wait_until(lambda: len(ledger(url)) == 8, 30, "8 jobs running")
            down_at = time.time()
            embedded.stop(home)
            time.sleep(max(0.0, down_at + outage - time.time()))
            assert embedded.start(home).running
            up_at = time.time()
            wait_until(lambda: _all_succeeded(url, jobs), outage + 60, "every job to succeed")
            done_at = time.time()
            runs = ledger(url)
            report(
                f"outage-{outage:g}s-database-stopped",
                measured_outage_s=up_at - down_at,
                exits=sum(not w.alive() for w in workers),
                runs=len(runs),
                reruns=len(runs) - len(jobs),
                unfinished_runs=sum(r.ended_at is None for r in runs),
                up_to_all_done_s=done_at - up_at,
            )
            for w in workers:
                assert w.alive(), w.output()[-3000:]
                assert '"action": "fenced"' not in w.output()
            assert len(runs) == len(jobs) and all(r.ended_at is not None for r in runs)
            assert query(url, "SELECT count(*) FROM jobsys_failures")[0][0] == 0
        finally:
            for w in workers:
                w.stop()


def test_connections_reset_mid_job_are_ridden_out(db_url: str, tmp_path: Path) -> None:
    """Every connection of A reset (TCP RST) twice while its jobs run, with a short
    lease: A reconnects, keeps its jobs, nothing runs twice, nobody requeues."""
    config = write_config(tmp_path, heartbeat=1.0, dead_after=6.0, reap=1.0)
    with (
        ChaosProxy(db_url) as proxy,
        busy_worker_and_a_peer(tmp_path, proxy.url, db_url, config, seconds=8) as (a, b, jobs),
    ):
        for _ in range(2):
            time.sleep(1.5)
            proxy.reset()
        reset_at = time.time()
        wait_until(lambda: _all_succeeded(db_url, jobs), 60, "every job")
        runs = ledger(db_url)
        report(
            "connections-reset-mid-job",
            resets=2,
            proxy_connections=proxy.connections,
            reset_to_all_done_s=time.time() - reset_at,
            runs=len(runs),
            reruns=len(runs) - len(jobs),
            requeues=len(requeue_times(db_url)),
            worker_exits=int(not a.alive()) + int(not b.alive()),
        )
        assert a.alive(), a.output()[-3000:]
        assert len(runs) == len(jobs) and requeue_times(db_url) == []
        assert '"action": "fenced"' not in a.output()
