"""The worker process: every selected lane in one asyncio loop, supervised.

One Procrastinate App and one connection pool (``pool.pool_size``) serve all lanes.
Beside them run the process heartbeat (``heartbeat``), one LISTEN connection
(``listener``) and every ``jobsys.app.worker_services``
(scheduler, reaper, ...) under supervision (``supervisor``), and a watchdog that
catches sync jobs running past their timeout.

Exit codes (README, "Running workers"):

- 0: stopped on request (SIGTERM/SIGINT, or ``--drain`` found nothing left);
- 1 (``EXIT_BACKGROUND_LOST``): a lane or a background service died and could not be
  restored: a supervisor should restart the process;
- 70 (``EXIT_JOBS_ABANDONED``): a sync job ran past its timeout, or a job could not
  be stopped at shutdown (sync, or async and still running after its cancel); the
  process exits without it and the reaper recovers it;
- 75 (``EXIT_FENCED``): the process lost its lease on its jobs (its heartbeat rows
  were removed, or its lease ran out: no successful beat sent within
  ``dead_after - heartbeat_interval - drift allowance``, ``heartbeat.Lease``): it
  exits at once like a crash, and the reaper settles its jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import os
import random
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobsys import tasks as task_registry
from jobsys.config import Config, LaneSpec
from jobsys.engine import pool
from jobsys.engine.listener import Listener
from jobsys.engine.worker import LaneWorker, wait_or_timeout
from jobsys.errors import ConfigError, DatabaseUnavailable
from jobsys.flow.limits import policy_for_lane
from jobsys.flow.order import claim_order
from jobsys.flow.store import CHANNEL as PAUSES_CHANNEL
from jobsys.flow.watch import PauseWatch
from jobsys.lanes import execution, fence_notes, lifecycle, store
from jobsys.lanes.heartbeat import ProcessHeartbeat
from jobsys.lanes.identity import ProcessIdentity
from jobsys.lanes.reaper import settle_handed_over
from jobsys.lanes.supervisor import Backoff, supervise

logger = logging.getLogger("jobsys.lanes.runtime")

EXIT_OK = 0
EXIT_BACKGROUND_LOST = 1
EXIT_JOBS_ABANDONED = 70
EXIT_FENCED = 75
DRAIN_CHECK_SECONDS = 0.2
STARTUP_RETRY_SECONDS = 1.0
SERVICES_STOP_SECONDS = 10.0
#: After a sync job's timeout, how long the other running jobs get before they are
#: requeued (at most the shutdown grace): the worker must exit within timeout + 5 s.
SYNC_TIMEOUT_GRACE_SECONDS = 2.0


@dataclass
class RuntimeResult:
    exit_code: int
    reason: str
    process_id: str
    abandoned_job_ids: list[int] = field(default_factory=list)
    jobs_done: int = 0


def listen_required(config: Config, url: str) -> ConfigError:
    """The refusal of a worker whose LISTEN/NOTIFY does not round-trip under
    ``worker.listen: required``."""
    from jobsys.config.loader import QUEUES_FILE, display_path
    from jobsys.db.url import mask

    return ConfigError(
        [
            f"{display_path(config.directory / QUEUES_FILE)}: worker.listen: 'required', but "
            f"a NOTIFY sent through {mask(url)} never reached this worker's LISTEN "
            "connection: a connection pooler in transaction mode (PgBouncer "
            "pool_mode = transaction) does not deliver notifications"
        ],
        hint="Point jobsys at PostgreSQL directly or at a session-mode pool (README, "
        '"Connection poolers"), or set worker.listen: auto to rely on polling.',
    )


def scaled(lanes: list[LaneSpec], factor: float) -> list[LaneSpec]:
    if factor == 1.0:
        return lanes
    return [
        dataclasses.replace(lane, concurrency=max(1, round(lane.concurrency * factor)))
        for lane in lanes
    ]


class Runtime:
    def __init__(
        self,
        config: Config,
        url: str,
        lanes: list[LaneSpec],
        *,
        drain: bool = False,
        services: list[Any] | None = None,
        hooks: list[lifecycle.LifecycleHook] | None = None,
        middlewares: list[Any] | None = None,
        install_signal_handlers: bool = True,
        backoff: Backoff | None = None,
        home: Path | None = None,
    ) -> None:
        """``home``: where a fenced process leaves its note (``fence_notes``), and where
        this one reports the notes of earlier processes."""
        self.config = config
        self.url = url
        self.lanes = lanes
        self.drain = drain
        self.services = list(services or [])
        self.hooks = list(hooks or [])
        self.middlewares = list(middlewares or [])
        self.install_signal_handlers = install_signal_handlers
        self.backoff = backoff or Backoff()
        self.home = home
        self.identity = ProcessIdentity.current()
        self.queues = [q for lane in lanes for q in lane.queues]
        self.workers: list[LaneWorker] = []
        self.app: Any = None
        self.listener: Listener | None = None
        self.pauses: PauseWatch | None = None
        self.heartbeat: ProcessHeartbeat | None = None
        self.listening = False
        #: Sync jobs past their timeout: job id -> timeout (seconds).
        self._timed_out: dict[int, float] = {}
        self.state = "starting"
        self._stop_requested = asyncio.Event()
        self._hard = False
        self._exit_code = EXIT_OK
        self._reason = "stopped"
        self._signals = 0

    # --- control --------------------------------------------------------------

    def request_stop(self, reason: str, *, exit_code: int | None = None) -> None:
        """Stop fetching; running jobs get the grace period. Idempotent."""
        if exit_code is not None and exit_code > self._exit_code:
            self._exit_code = exit_code
        if not self._stop_requested.is_set():
            self._reason = reason
            self._stop_requested.set()

    def hard_stop(self) -> None:
        """Skip the grace period: requeue async jobs now, abandon sync ones."""
        self._hard = True
        self.request_stop("hard stop")
        for worker in self.workers:
            worker.hard_stop()

    def _on_signal(self, name: str) -> None:
        self._signals += 1
        if self._signals == 1:
            logger.info(
                f"{name}: stopping; running jobs get "
                f"{self.config.queues.worker.shutdown_grace_seconds:g} s (again to stop now)",
                extra={"action": "signal_stop", "signal": name},
            )
            self.request_stop(name)
            self._stop_lanes()
        else:
            logger.warning(
                f"{name} again: stopping now", extra={"action": "signal_hard_stop", "signal": name}
            )
            self.hard_stop()

    def _fatal(self, reason: str) -> None:
        logger.error(f"stopping: {reason}", extra={"action": "fatal", "reason": reason})
        self.request_stop(reason, exit_code=EXIT_BACKGROUND_LOST)
        self._stop_lanes()

    def _fence(self, reason: str) -> None:
        """This process lost its lease on its jobs: exit now, touching no job row.

        A graceful stop would finish or requeue its running jobs, overwriting what the
        reaper decided for them (possibly while another worker runs them). Exiting
        like a crash leaves them to the reaper, so no job runs twice at once.
        """
        logger.critical(
            f"fenced: {reason}; exiting at once ({EXIT_FENCED}), running jobs are left "
            "to the reaper",
            extra={"action": "fenced", "reason": reason},
        )
        if self.home is not None:
            fence_notes.leave(self.home, self.identity.id, reason)
        lifecycle.call(self.hooks, "stopping", self.snapshot())
        logging.shutdown()
        os._exit(EXIT_FENCED)

    async def _report_fence_notes(self, conn: Any) -> None:
        """Earlier processes of this home that fenced while the database was away: their
        rows say ``fenced`` from now on (``fence_notes``)."""
        if self.home is None:
            return
        for note in fence_notes.pending(self.home):
            await store.mark_fenced(conn, note.process_id, note.fenced_at)
            fence_notes.done(note)
            logger.info(
                f"process {note.process_id} fenced itself at {note.fenced_at.isoformat()} "
                f"({note.reason}); recorded",
                extra={"action": "fence_reported", "fenced_process": note.process_id},
            )

    def _stop_lanes(self) -> None:
        for worker in self.workers:
            worker.stop()

    def snapshot(self, waiting: dict[str, int] | None = None) -> lifecycle.Snapshot:
        return lifecycle.Snapshot(
            process_id=self.identity.id,
            lanes=tuple(lane.name for lane in self.lanes),
            state=self.state,
            running={w.lane.name: len(w.running()) for w in self.workers},
            waiting=waiting,
            jobs_done=sum(w.jobs_done for w in self.workers),
            listening=self.listening,
        )

    # --- the run ------------------------------------------------------------------

    async def _check_database(self) -> None:
        from jobsys.db.connect import check_schema, connect

        deadline = time.monotonic() + self.config.queues.worker.startup_wait_seconds
        while True:
            try:
                async with connect(self.url) as conn:
                    await check_schema(conn)
                return
            except DatabaseUnavailable:
                if time.monotonic() >= deadline:
                    raise
                logger.warning(
                    "database unreachable; waiting for it (worker.startup_wait_seconds)",
                    extra={"action": "startup_wait"},
                )
                await asyncio.sleep(STARTUP_RETRY_SECONDS)

    async def run(self) -> RuntimeResult:
        from jobsys.jobs import defer
        from jobsys.lanes.execution import build_engine_app

        await self._check_database()
        loop = asyncio.get_running_loop()
        total = sum(lane.concurrency for lane in self.lanes)
        # Sync jobs run in the loop's default executor: size it to the lanes, or the
        # default (cpu + 4 threads) would cap the concurrency of sync tasks.
        loop.set_default_executor(
            ThreadPoolExecutor(max_workers=total + 4, thread_name_prefix="jobsys-job")
        )
        size = pool.pool_size(self.lanes)
        self.app = build_engine_app(self.url, self.config, min_size=min(4, size), max_size=size)
        await self.app.open_async()
        defer.activate(self.config, self.app, self.url)
        try:
            return await self._run_open()
        finally:
            defer.deactivate()
            with contextlib.suppress(Exception):
                await self.app.close_async()

    async def _start_listening(
        self, by_queue: dict[str, LaneWorker], stop: asyncio.Event
    ) -> asyncio.Task[None]:
        """The LISTEN connection, and whether a NOTIFY round-trips to it: checked before
        the worker registers or runs a job, since ``worker.listen: required`` refuses
        to start without it."""
        worker_settings = self.config.queues.worker
        self.pauses = PauseWatch(
            pool.of(self.app),
            self.queues,
            wake=lambda queues: self._wake_queues(by_queue, queues),
            poll_interval_seconds=worker_settings.poll_interval_seconds,
        )
        self.listener = Listener(
            self.url,
            self.queues,
            on_job_inserted=lambda q: by_queue[q].wake() if q in by_queue else None,
            on_abort_requested=lambda q, job_id: (
                by_queue[q].abort_requested([job_id]) if q in by_queue else None
            ),
            on_reconnected=self._reconnected,
            on_pauses_changed=self.pauses.notified,
            pauses_channel=PAUSES_CHANNEL,
        )
        task = asyncio.create_task(self.listener.run(stop), name="listener")
        self.listening = await self.listener.round_trip(pool.of(self.app))
        if not self.listening:
            if worker_settings.listen == "required":
                stop.set()
                await asyncio.gather(task, return_exceptions=True)
                raise listen_required(self.config, self.url)
            logger.error(
                "LISTEN/NOTIFY does not round-trip on this database connection (a "
                "connection pooler in transaction mode?): new jobs are picked up only by "
                f"polling, every {worker_settings.poll_interval_seconds:g} s. Point jobsys at "
                "the server directly or a session-mode pooler.",
                extra={"action": "listen_notify_broken"},
            )
        return task

    async def _run_open(self) -> RuntimeResult:
        worker_settings = self.config.queues.worker
        by_queue: dict[str, LaneWorker] = {}
        background_stop = asyncio.Event()
        listener_task = await self._start_listening(by_queue, background_stop)
        # The lease starts when the registration (the first beat) is sent.
        granted_at = time.monotonic()
        async with pool.connection(self.app) as conn:
            await store.register_process(
                conn,
                {
                    "id": self.identity.id,
                    "hostname": self.identity.hostname,
                    "pid": self.identity.pid,
                    "lanes": [lane.name for lane in self.lanes],
                    "concurrency": json.dumps({lane.name: lane.concurrency for lane in self.lanes}),
                    "started_at": self.identity.started_at,
                },
            )
            await self._report_fence_notes(conn)
        self.heartbeat = ProcessHeartbeat(
            self.url,
            self.identity.id,
            worker_settings.heartbeat_interval_seconds,
            dead_after_seconds=worker_settings.dead_after_seconds,
            granted_at=granted_at,
            on_fenced=self._fence,
        )
        # The lease guard runs before any lane can take a job.
        heartbeat_stop = asyncio.Event()
        heartbeat_task = asyncio.create_task(self.heartbeat.run(heartbeat_stop), name="heartbeat")
        try:
            return await self._run_lanes(
                heartbeat_stop, heartbeat_task, by_queue, background_stop, listener_task
            )
        finally:
            heartbeat_stop.set()
            await heartbeat_task
            background_stop.set()
            await asyncio.gather(listener_task, return_exceptions=True)

    async def _run_lanes(
        self,
        heartbeat_stop: asyncio.Event,
        heartbeat_task: asyncio.Task[None],
        by_queue: dict[str, LaneWorker],
        background_stop: asyncio.Event,
        listener_task: asyncio.Task[None],
    ) -> RuntimeResult:
        assert self.heartbeat is not None and self.pauses is not None
        worker_settings = self.config.queues.worker
        self.workers = [
            LaneWorker(
                self.app,
                lane,
                process_id=self.identity.id,
                poll_interval_seconds=worker_settings.poll_interval_seconds,
                shutdown_grace_seconds=worker_settings.shutdown_grace_seconds,
                worker_middleware=self.middlewares,
                config=self.config,
                orphan_check_seconds=worker_settings.reap_interval_seconds,
                # a lane that hands an orphan over settles it in the same check
                settle_orphans=functools.partial(settle_handed_over, self.app, self.config),
                # order: strict / weights (one draw per claim); default: priority, then id
                claim_order=functools.partial(claim_order, lane, random.Random()),
                limits=policy_for_lane(self.config, lane),
            )
            for lane in self.lanes
        ]
        # Before any job can start: a SIGTERM from now on drains instead of killing.
        self._install_signals()
        by_queue.update({q: w for w in self.workers for q in w.lane.queues})
        lane_tasks = {
            asyncio.create_task(w.run(), name=f"lane {w.lane.name}"): w for w in self.workers
        }
        await self._wait_lanes_started(lane_tasks)
        if self._stop_requested.is_set():  # a signal arrived while the lanes started
            self._stop_lanes()
        self.heartbeat.worker_ids = [w.worker_id for w in self.workers if w.worker_id]
        async with pool.connection(self.app) as conn:
            await store.set_lane_workers(conn, self.identity.id, self.heartbeat.worker_ids)

        background = {
            listener_task: "listener",
            asyncio.create_task(self.pauses.run(background_stop), name="pauses"): "pause watch",
            asyncio.create_task(self._watchdog(background_stop), name="watchdog"): "watchdog",
        }
        for service in self.services:
            name = getattr(service, "name", type(service).__name__)
            task = asyncio.create_task(
                supervise(service, self.app, background_stop, self.backoff), name=f"service {name}"
            )
            background[task] = f"service {name}"
        if self.hooks:
            background[asyncio.create_task(self._status(background_stop))] = "status"
        if self.drain:
            background[asyncio.create_task(self._drain_watch(background_stop))] = "drain"
        for task, name in background.items():
            task.add_done_callback(functools.partial(self._background_done, name=name))
        for task, worker in lane_tasks.items():
            task.add_done_callback(functools.partial(self._lane_done, worker=worker))

        self.state = "running"
        logger.info(
            f"worker {self.identity.id} running lanes "
            + ", ".join(f"{w.lane.name}({w.concurrency})" for w in self.workers),
            extra={"action": "worker_ready", "worker_process": self.identity.id},
        )
        lifecycle.call(self.hooks, "ready", self.snapshot())

        await self._stop_requested.wait()
        self.state = "draining"
        self.heartbeat.status = "draining"
        lifecycle.call(self.hooks, "stopping", self.snapshot())
        background_stop.set()
        self._stop_lanes()
        await asyncio.gather(*lane_tasks, return_exceptions=True)
        abandoned = [c.job.id for w in self.workers for c in w.abandoned if c.job.id]
        if abandoned:
            self._exit_code = max(self._exit_code, EXIT_JOBS_ABANDONED)
        await self._stop_background(background)
        heartbeat_stop.set()
        await heartbeat_task
        # Last, right before the process exits and kills their threads: timed-out sync
        # jobs get their failure row and are retried or failed per policy.
        for worker in self.workers:
            for context in worker.abandoned:
                timeout = self._timed_out.get(context.job.id or 0)
                if timeout is not None:
                    await worker.settle_timed_out(context, timeout)
        if not abandoned:
            # With abandoned jobs we leave the row 'draining' and let its heartbeat go
            # stale: the reaper recovers them once this process is surely gone.
            with contextlib.suppress(Exception):
                async with pool.connection(self.app, timeout=5) as conn:
                    await store.mark_stopped(conn, self.identity.id)
        self.state = "stopped"
        result = RuntimeResult(
            exit_code=self._exit_code,
            reason=self._reason,
            process_id=self.identity.id,
            abandoned_job_ids=abandoned,
            jobs_done=sum(w.jobs_done for w in self.workers),
        )
        logger.info(
            f"worker {self.identity.id} stopped ({result.reason}), exit {result.exit_code}",
            extra={"action": "worker_stopped", "exit_code": result.exit_code},
        )
        return result

    async def _wait_lanes_started(self, lane_tasks: dict[asyncio.Task[Any], LaneWorker]) -> None:
        started = asyncio.gather(*(w.started.wait() for w in self.workers))
        done, _ = await asyncio.wait([started, *lane_tasks], return_when=asyncio.FIRST_COMPLETED)
        if started not in done:
            started.cancel()
            for task in lane_tasks:
                if task.done() and task.exception() is not None:
                    for other in lane_tasks:
                        other.cancel()
                    raise DatabaseUnavailable(
                        f"lane {lane_tasks[task].lane.name} could not start: {task.exception()}"
                    )

    async def _stop_background(self, background: dict[asyncio.Task[Any], str]) -> None:
        pending = [t for t in background if not t.done()]
        if pending:
            _, still = await asyncio.wait(pending, timeout=SERVICES_STOP_SECONDS)
            for task in still:
                task.cancel()
            await asyncio.gather(*still, return_exceptions=True)

    def _wake_all(self) -> None:
        for worker in self.workers:
            worker.wake()

    def _reconnected(self) -> None:
        # Inserts, resumes and pauses made while deaf were not heard.
        self._wake_all()
        if self.pauses is not None:
            self.pauses.reconnected()

    @staticmethod
    def _wake_queues(by_queue: dict[str, LaneWorker], queues: list[str]) -> None:
        for worker in {id(by_queue[q]): by_queue[q] for q in queues if q in by_queue}.values():
            worker.wake()

    def _lane_done(self, task: asyncio.Task[Any], worker: LaneWorker) -> None:
        if task.cancelled() or (self._stop_requested.is_set() and task.exception() is None):
            return
        error = task.exception()
        self._fatal(f"lane {worker.lane.name} stopped unexpectedly: {error!r}")

    def _background_done(self, task: asyncio.Task[Any], name: str) -> None:
        if task.cancelled():
            return
        error = task.exception()  # retrieved even while stopping: no "never retrieved"
        if error is not None and not self._stop_requested.is_set():
            self._fatal(f"{name} failed and could not be restored: {error}")

    def _install_signals(self) -> None:
        if not self.install_signal_handlers:
            return
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._on_signal, sig.name)

    async def _watchdog(self, stop: asyncio.Event) -> None:
        overdue_reported: set[int] = set()
        while not await wait_or_timeout(stop, lifecycle.WATCHDOG_TICK_SECONDS):
            lifecycle.call(self.hooks, "watchdog")
            now = time.time()
            for worker in self.workers:
                for context in worker.running():
                    job = context.job
                    spec = task_registry.get(job.task_name)
                    if job.id is None or spec is None or spec.is_async:
                        continue
                    timeout = execution.effective_timeout(spec, self.config, job.queue)
                    if timeout is None or now - context.start_timestamp <= timeout:
                        continue
                    if job.id in overdue_reported:
                        continue
                    overdue_reported.add(job.id)
                    self._timed_out[job.id] = timeout
                    logger.error(
                        f"sync job {job.task_name}[{job.id}] ran past its timeout of "
                        f"{timeout:g} s and cannot be cancelled: this worker stops taking "
                        "jobs and exits so its supervisor restarts it",
                        extra={"action": "sync_job_timeout", "job_id": job.id},
                    )
                    self.request_stop(
                        f"sync job {job.task_name}[{job.id}] timed out",
                        exit_code=EXIT_JOBS_ABANDONED,
                    )
                    self._stop_lanes()
                    grace = min(
                        self.config.queues.worker.shutdown_grace_seconds,
                        SYNC_TIMEOUT_GRACE_SECONDS,
                    )
                    asyncio.get_running_loop().call_later(grace, self.hard_stop)

    async def _status(self, stop: asyncio.Event) -> None:
        assert self.heartbeat is not None
        while not await wait_or_timeout(stop, self.heartbeat.interval_seconds):
            waiting: dict[str, int] | None = None
            try:
                async with pool.connection(self.app, timeout=1) as conn:
                    by_queue = await store.waiting_by_queue(conn, self.queues)
                waiting = {
                    lane.name: sum(by_queue.get(q, 0) for q in lane.queues) for lane in self.lanes
                }
            except Exception:
                waiting = None
            lifecycle.call(self.hooks, "status", self.snapshot(waiting))

    async def _drain_watch(self, stop: asyncio.Event) -> None:
        assert self.heartbeat is not None
        while not await wait_or_timeout(stop, DRAIN_CHECK_SECONDS):
            if any(w.running() for w in self.workers):
                continue
            try:
                async with pool.connection(self.app) as conn:
                    waiting, running = await store.drain_state(
                        conn, self.queues, self.heartbeat.worker_ids
                    )
            except Exception:
                continue
            if waiting == 0 and running == 0:
                logger.info(
                    "drained: no job waiting or running in the selected queues",
                    extra={"action": "drained"},
                )
                self.request_stop("drained")
                return
