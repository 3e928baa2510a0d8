"""One lane: a Procrastinate ``Worker`` over the lane's queues at its concurrency.

What this subclass changes, and why (Procrastinate 3.10's ``worker.py``):

- **No side tasks of its own but abort polling.** The process runs one LISTEN
  connection for every lane (``listener``), one heartbeat for every lane
  (``heartbeat``) and one periodic deferrer; a failed side task no longer stops the
  lane, and shutdown no longer cancels the heartbeat before jobs finish.
- **Database errors do not kill the lane.** A failed fetch is retried with backoff
  (polling continues); a job's outcome that cannot be written is retried until it
  is, so a database outage delays results and loses none.
- **Shutdown requeues.** Jobs still running after the grace period are cancelled and
  put back to ``todo`` (Procrastinate would mark them ``aborted``) if their task is
  ``rerun_safe``, else failed, as the reaper does with a dead worker's; sync jobs, which
  cannot be cancelled, are reported as abandoned so the process can exit and the
  reaper recover them. A hard stop skips the grace period.

- **Every outcome write is supervised.** A connection error is retried until the
  database takes it; any other error is logged with the job id and retried
  :data:`PERSIST_MAX_ERRORS` times, then the job is handed to the reaper (detached
  from this worker: a ``doing`` job without a worker is settled by the reaper's
  dead-worker rules at its next pass), never left ``doing`` under a live worker. A
  retry that collides with a waiting sibling on the queueing lock's unique index
  (``procrastinate_jobs_queueing_lock_idx_v1``) is merged into that sibling: the job
  is finished ``failed``, its failure row says it will not be retried and why
  (``retry_state.outcome = merged_into_waiting_sibling``), the sibling runs once.
- **No job ``doing`` for this lane without it running it.** Every half
  ``orphan_check_seconds`` (the reaper's period) the lane looks for jobs in ``doing``
  under its worker id that it is not running, started over a quarter period ago (at
  most :data:`ORPHAN_MIN_AGE_SECONDS`; whatever the cause), hands them to the reaper
  (``job_orphaned``) and passes them to ``settle_orphans`` (the reaper's rules) at once,
  so such a job is settled by the reaper's dead-worker rules within one reaper period
  of being orphaned. A check is skipped while a claim of this lane is in flight (its
  jobs may be committed ``doing`` and not yet in the running set).
- **Less per job.** ``_process_job`` is Procrastinate's with the per-job work
  nothing reads left out (log messages below the logger's level, task lookups) and a
  final outcome waiting for the lane's batch of acknowledgements without a task of
  its own, as shielded from the job's cancellation as Procrastinate's persist task
  (README "Performance": the worker's CPU per job of a drain, 154 -> 123 µs).
- **Several jobs per round trip.** The fetch loop claims as many due jobs as the
  lane has free slots (up to ``MAX_CLAIM``) in one statement with Procrastinate's own
  candidate rule (``jobsys.engine.queries.CLAIM_JOBS``), instead of one job per call. A
  worker only claims what it can start at once, so jobs never wait in ``doing``
  behind a busy worker while another one idles.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import functools
import inspect
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from procrastinate import exceptions, job_context, jobs, middleware, retry, utils
from procrastinate.worker import Worker

from jobsys import engine
from jobsys.config import LaneSpec
from jobsys.engine import api, manager
from jobsys.engine.acks import FinishBatcher, is_connection_error
from jobsys.engine.context import JOB_QUEUE
from jobsys.errors import JobTimeoutError

logger = logging.getLogger("jobsys.lanes")

#: Every this many limited claims, one also prunes the ledger of starts.
PRUNE_EVERY_CLAIMS = 200
#: Must equal jobsys.flow.limits.CONCURRENCY_RECHECK_SECONDS (a test checks): a bucket
#: full by concurrency is tried again when a job of the lane ends.
CONCURRENCY_RECHECK_SECONDS = 1.0
#: Procrastinate prunes workers whose heartbeat is older than this when a worker
#: starts. Pruning detaches running jobs from their worker (``ON DELETE SET NULL``),
#: which would let a live job be taken for a dead one; the reaper prunes instead.
PRUNE_NEVER_SECONDS = 10 * 365 * 24 * 3600.0
FETCH_RETRY_MIN_SECONDS = 0.2
PERSIST_RETRY_MAX_SECONDS = 5.0
#: Non-connection errors writing one job's outcome before it is handed to the reaper.
PERSIST_MAX_ERRORS = 3
#: The unique index that keeps one waiting job per queueing lock.
QUEUEING_LOCK_INDEX = "procrastinate_jobs_queueing_lock_idx_v1"
#: A timed-out sync job settled by its exiting worker runs again no sooner than this:
#: its thread dies only with the process, which exits right after.
SYNC_TIMEOUT_RETRY_MARGIN_SECONDS = 10.0
#: A job claimed this recently may still be on its way to the running set.
ORPHAN_MIN_AGE_SECONDS = 2.0
#: The level Procrastinate's worker logs each per-job action at (its failed jobs,
#: ``job_error``, are at ERROR and always built).
_ENGINE_ACTION_LEVELS = {
    "loaded_job_info": logging.DEBUG,
    "start_job": logging.INFO,
    "finish_task": logging.DEBUG,
    "job_success": logging.INFO,
    "job_aborted": logging.INFO,
    "job_aborted_retry": logging.INFO,
    "job_error_retry": logging.INFO,
}
_ENGINE_WORKER_LOGGER = logging.getLogger(engine.WORKER_LOGGER)
#: The most jobs one fetch claims (a lane claims at most its free slots).
MAX_CLAIM = 100
#: After the grace period, how long cancelled async jobs get to record their requeue.
ABORT_SETTLE_SECONDS = 5.0
SYNC_ABORT_SETTLE_SECONDS = 0.5


def is_queueing_lock_conflict(exc: BaseException) -> bool:
    return (
        isinstance(exc, exceptions.UniqueViolation) and exc.constraint_name == QUEUEING_LOCK_INDEX
    )


async def wait_or_timeout(event: asyncio.Event, seconds: float) -> bool:
    """Wait for ``event`` up to ``seconds``; True when it was set."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout=seconds)
    return event.is_set()


class LaneWorker(Worker):
    def __init__(
        self,
        app: Any,
        lane: LaneSpec,
        *,
        process_id: str,
        poll_interval_seconds: float,
        shutdown_grace_seconds: float,
        worker_middleware: list[Any],
        concurrency: int | None = None,
        config: Any = None,
        orphan_check_seconds: float = 5.0,
        settle_orphans: Callable[[list[int]], Awaitable[object]] | None = None,
        claim_order: Callable[[], tuple[list[str], bool]] | None = None,
        limits: Any = None,
    ) -> None:
        super().__init__(
            app,
            queues=list(lane.queues),
            name=f"lane.{lane.name}",
            concurrency=concurrency or lane.concurrency,
            wait=True,
            fetch_job_polling_interval=poll_interval_seconds,
            shutdown_graceful_timeout=shutdown_grace_seconds,
            listen_notify=False,
            # ``config``: built-in tasks read it (config.application.config_for), not the files.
            additional_context={
                "lane": lane.name,
                "worker_process": process_id,
                **({"config": config} if config is not None else {}),
            },
            install_signal_handlers=False,
            stalled_worker_timeout=PRUNE_NEVER_SECONDS,
            worker_middleware=worker_middleware,
        )
        self.lane = lane
        self.orphan_check_seconds = orphan_check_seconds
        self.settle_orphans = settle_orphans
        #: Claims whose reply has not reached the running set yet.
        self._claims_in_flight = 0
        self.started = asyncio.Event()
        self.abandoned: list[job_context.JobContext] = []
        self.jobs_done = 0
        self.db_healthy = True
        self._hard_stop = asyncio.Event()
        self._wakes = 0
        #: A claim failed on a connection error: it may have committed on the server.
        self._claim_uncertain = False
        #: (the queues this claim takes, in order; whether that order binds)
        self.claim_order = claim_order or (lambda: (list(self.lane.queues), False))
        #: The lane's flow limits (jobsys.flow.limits.LanePolicy; None: no limit concerns
        #: it, and the claim is one statement).
        self.limits = limits
        #: Buckets found full: bucket -> monotonic time to try again; those full by
        #: concurrency are tried again as soon as a job of this lane ends.
        self._full: dict[str, float] = {}
        self._full_by_concurrency: set[str] = set()
        self._limited_claims = 0
        self._wake_timer: asyncio.TimerHandle | None = None
        #: Jobs claimed under a rate -> the monotonic time before which each must not
        #: start; jobsys.flow.watch.start_middleware waits for it and records the start.
        self.rated_ids: dict[int, tuple[float, float]] = {}
        #: Outcomes are written in batches (jobsys.engine.acks); a batch is written at
        #: once when every running job of the lane waits for its own.
        self.acks = FinishBatcher(app.connector, waiting_jobs=lambda: len(self._running_jobs))
        #: Jobs whose task returned and whose slot was given back before their
        #: acknowledgement committed (they stay in the running set until it does).
        self._slot_given_back: set[int] = set()
        #: task name -> (the task, whether it is async, its task middlewares)
        self._task_shapes: dict[str, tuple[Any, bool, list[Any]]] = {}

    # --- what the runtime calls ---------------------------------------------------

    def wake(self) -> None:
        """A job was inserted in one of this lane's queues (NOTIFY)."""
        self._wakes += 1
        self._new_job_event.set()

    def abort_requested(self, job_ids: list[int]) -> None:
        self._handle_abort_jobs_requested(job_ids)

    def hard_stop(self) -> None:
        """Skip the grace period: requeue running jobs now."""
        self._hard_stop.set()
        self.stop()

    def running(self) -> list[job_context.JobContext]:
        return list(self._running_jobs.values())

    async def settle_timed_out(self, context: job_context.JobContext, timeout: float) -> bool:
        """Record a sync job that ran past ``timeout`` (its thread cannot be stopped) as
        failed with :class:`JobTimeoutError`, through the worker middlewares (so its
        failure row is written like any other), and retry or fail it per its task's
        policy. Called by the runtime right before the process exits, which kills the
        thread; a retry is not due before ``SYNC_TIMEOUT_RETRY_MARGIN_SECONDS``."""
        from procrastinate import middleware

        job = context.job
        error = JobTimeoutError(
            f"{job.task_name} ran past its timeout of {timeout:g} s and, being sync, could "
            "not be cancelled: its worker exited (70)"
        )

        async def raise_timeout() -> Any:
            raise error

        with contextlib.suppress(JobTimeoutError):
            await middleware.compose(self.worker_middleware, raise_timeout, context, self)()
        task = self.app.tasks.get(job.task_name)
        retry_exception = task.get_retry_exception(exception=error, job=job) if task else None
        decision = retry_exception.retry_decision if retry_exception else None
        if decision is not None:
            earliest = utils.utcnow() + datetime.timedelta(
                seconds=SYNC_TIMEOUT_RETRY_MARGIN_SECONDS
            )
            decision = retry.RetryDecision(
                retry_at=max(decision.retry_at or earliest, earliest),
                priority=decision.priority,
                queue=decision.queue,
                lock=decision.lock,
            )
        status = jobs.Status.FAILED
        try:
            await asyncio.wait_for(
                self._persist_job_status(job, status, decision, context, None),
                timeout=PERSIST_RETRY_MAX_SECONDS,
            )
        except (TimeoutError, exceptions.ConnectorException):
            return False  # still doing, under this dying worker: the reaper settles it
        return True

    def _log_extra(
        self,
        action: str,
        context: job_context.JobContext | None,
        job_result: job_context.JobResult | None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Procrastinate builds a record's ``extra`` (the job's fields through
        ``attrs.asdict``) three times per job before it asks the logger, which drops
        them: its worker logger is at WARNING unless ``--debug`` (jobsys.lanes.logs).
        Build it only when a record of that action's level would be emitted."""
        level = _ENGINE_ACTION_LEVELS.get(action)
        if (
            level is not None
            and not self.logger.isEnabledFor(level)
            and not _ENGINE_WORKER_LOGGER.isEnabledFor(level)
        ):
            return {"action": action}
        return super()._log_extra(action, context, job_result, **kwargs)

    def is_sync_task(self, task_name: str) -> bool:
        task = self.app.tasks.get(task_name)
        return task is not None and not inspect.iscoroutinefunction(task.func)

    # --- Procrastinate overrides ----------------------------------------------------

    def _start_side_tasks(self) -> list[asyncio.Task[Any]]:
        self.started.set()
        return [
            asyncio.create_task(self._poll_jobs_to_abort(), name="poll_jobs_to_abort"),
            asyncio.create_task(self._hand_over_orphans(), name="hand_over_orphans"),
        ]

    async def _hand_over_orphans(self) -> None:
        """Hand to the reaper every job ``doing`` under this lane that it does not run."""
        min_age = min(ORPHAN_MIN_AGE_SECONDS, self.orphan_check_seconds / 4)
        while True:
            await asyncio.sleep(self.orphan_check_seconds / 2)
            if self.worker_id is None or self._claim_uncertain or self._claims_in_flight:
                continue  # an uncertain claim's jobs are started by the next claim
            try:
                orphans = await manager.orphaned_jobs(
                    self.app.connector, self.worker_id, self._running_ids(), min_age
                )
                if self._claims_in_flight or self._claim_uncertain:
                    continue  # a claim may have committed jobs not yet in the running set
                # No claim in flight now: every job claimed before the query is running
                # here (or done) by now, so what is not in the running set is an orphan.
                running = set(self._running_ids())
                handed: list[int] = []
                for job_id in orphans:
                    if job_id in running:
                        continue
                    if not await manager.hand_to_reaper(
                        self.app.connector, job_id, worker_id=self.worker_id
                    ):
                        continue  # finished, or no longer ours, meanwhile
                    handed.append(job_id)
                    logger.error(
                        f"lane {self.lane.name}: job {job_id} is doing under this lane but "
                        "nothing here runs it; handed to the reaper",
                        extra={"action": "job_orphaned", "lane": self.lane.name, "job_id": job_id},
                    )
                if handed and self.settle_orphans is not None:
                    await self.settle_orphans(handed)
            except Exception as exc:  # the next check tries again; never kills the lane
                logger.warning(
                    f"lane {self.lane.name}: orphan check failed: {type(exc).__name__}",
                    extra={"action": "orphan_check_failed", "lane": self.lane.name},
                )

    def _running_ids(self) -> list[int]:
        return [c.job.id for c in self._running_jobs.values() if c.job.id is not None]

    async def _fetch_and_process_jobs(self) -> None:
        delay = FETCH_RETRY_MIN_SECONDS
        while not self._stop_event.is_set():
            wakes_before = self._wakes
            try:
                await self._claim_and_start_jobs()
            except exceptions.UniqueViolation:
                # Two claimers raced for jobs of one lock and the database refused the
                # second (procrastinate_jobs_lock_idx_v1): nothing was claimed; the
                # winner has committed by now, so fetch again at once.
                logger.debug(
                    f"lane {self.lane.name}: lock conflict while claiming; fetching again",
                    extra={"action": "claim_lock_conflict", "lane": self.lane.name},
                )
                self._new_job_event.set()
                return
            except exceptions.ConnectorException as exc:
                if not is_connection_error(exc):
                    raise
                self._claim_uncertain = True
                if self.db_healthy:
                    logger.warning(
                        f"lane {self.lane.name}: cannot fetch jobs, database unreachable; retrying",
                        extra={"action": "fetch_failed", "lane": self.lane.name},
                    )
                self.db_healthy = False
                await wait_or_timeout(self._stop_event, delay)
                delay = min(delay * 2, self.fetch_job_polling_interval)
                continue
            if not self.db_healthy:
                logger.info(
                    f"lane {self.lane.name}: database reachable again",
                    extra={"action": "fetch_restored", "lane": self.lane.name},
                )
                self.db_healthy = True
            if self._wakes != wakes_before:
                # Procrastinate clears the wake-up event after every fetch, even one that
                # found nothing: a NOTIFY that landed during it would wait for the next
                # poll. Set it again so the job is fetched now.
                self._new_job_event.set()
            return

    async def _claim_and_start_jobs(self) -> None:
        """Procrastinate's ``_fetch_and_process_jobs`` claiming every free slot at once:
        wait for one slot, take the others that are free without waiting, claim that
        many jobs, start each, give back the slots no job came for."""
        # One waiter on the stop event for all the cycles of this call (Procrastinate's
        # wait_any made, cancelled and awaited one per claim).
        stopped = asyncio.ensure_future(self._stop_event.wait())
        try:
            await self._claim_cycles(stopped)
        finally:
            if not stopped.done():
                stopped.cancel()

    async def _claim_cycles(self, stopped: asyncio.Future[Any]) -> None:
        while not self._stop_event.is_set():
            slots = 0
            claimed: list[jobs.Job] = []
            try:
                if self._job_semaphore.locked():
                    first_slot = asyncio.ensure_future(self._job_semaphore.acquire())
                    try:
                        await asyncio.wait(
                            (first_slot, stopped), return_when=asyncio.FIRST_COMPLETED
                        )
                    except BaseException:
                        first_slot.cancel()
                        raise
                    if not first_slot.done():
                        first_slot.cancel()
                        await asyncio.gather(first_slot, return_exceptions=True)
                    if first_slot.cancelled() or first_slot.exception() is not None:
                        break  # stopped while waiting: no slot was taken
                else:
                    await self._job_semaphore.acquire()  # free: returns without waiting
                slots = 1
                while slots < min(self.concurrency, MAX_CLAIM) and not self._job_semaphore.locked():
                    await self._job_semaphore.acquire()  # free: returns without waiting
                    slots += 1
                if self._stop_event.is_set():
                    break
                # Counted until the claimed jobs are in the running set (no await
                # between the claim's reply and _start_job below): the orphan check
                # skips while a claim is in flight.
                self._claims_in_flight += 1
                try:
                    claimed = [jobs.Job.from_row(row) for row in await self._claim(slots)]
                finally:
                    self._claims_in_flight -= 1
            finally:
                for _ in range(slots - len(claimed)):
                    self._job_semaphore.release()
                self._new_job_event.clear()
            # Claimed jobs are ours (status doing): start them even when a stop came
            # meanwhile, so shutdown drains or requeues them like any running job.
            for job in claimed:
                self._start_job(job)
            if len(claimed) < slots:
                return  # the queues are empty for now: wait for a NOTIFY or the poll

    async def _claim(self, slots: int) -> list[dict[str, Any]]:
        """Up to ``slots`` jobs for this lane to start now, marked ``doing`` for it."""
        assert self.worker_id is not None
        rows: list[dict[str, Any]] = []
        if self._claim_uncertain:
            # The last claim's reply was lost, perhaps after it committed: its jobs are
            # ours, in ``doing``, and neither the reaper (this worker is alive) nor an
            # abort request (they are not running here) would ever move them. Start them
            # first, before claiming more.
            running = [c.job.id for c in self._running_jobs.values() if c.job.id is not None]
            rows = await manager.unstarted_jobs(self.app.connector, self.worker_id, running, slots)
            self._claim_uncertain = len(rows) == slots  # a full page: look again next time
            if rows:
                logger.warning(
                    f"lane {self.lane.name}: starting {len(rows)} job(s) claimed by a fetch "
                    "whose reply was lost",
                    extra={"action": "claim_recovered", "lane": self.lane.name},
                )
        if len(rows) < slots:
            queues, in_order = self.claim_order()
            if self.limits is not None:
                rows += await self._claim_limited(queues, in_order, slots - len(rows))
            else:
                rows += await manager.claim_jobs(
                    self.app.connector, queues, self.worker_id, slots - len(rows), in_order=in_order
                )
        return rows

    async def _claim_limited(self, queues: list[str], in_order: bool, slots: int) -> list[Any]:
        """The claim under flow limits; buckets found full are skipped until they reopen,
        and the lane wakes itself then (no NOTIFY says a window has room again)."""
        import psycopg

        assert self.worker_id is not None
        now = time.monotonic()
        self._full = {b: t for b, t in self._full.items() if t > now}
        self._full_by_concurrency &= set(self._full)
        self._limited_claims += 1
        prune = (
            self.limits.longest_window_seconds
            if self._limited_claims % PRUNE_EVERY_CLAIMS == 0
            else None
        )
        try:
            rows, full, rated = await manager.claim_limited(
                self.app.connector.pool,  # type: ignore[attr-defined]
                queues,
                self.worker_id,
                slots,
                in_order=in_order,
                policy=self.limits,
                full=sorted(self._full),
                prune_seconds=prune,
                binding=bool(self._full),
            )
        except psycopg.errors.UniqueViolation as exc:
            raise exceptions.UniqueViolation(
                constraint_name=exc.diag.constraint_name, queueing_lock=None
            ) from exc
        except psycopg.Error as exc:
            raise exceptions.ConnectorException(str(exc)) from exc
        answered = time.monotonic()  # later than the database's "now": never early
        for job_id, (wait, rtt) in rated.items():
            self.rated_ids[job_id] = (answered + wait, rtt)
        for bucket, seconds in full.items():
            self._full[bucket] = answered + seconds
            if seconds == CONCURRENCY_RECHECK_SECONDS:
                self._full_by_concurrency.add(bucket)
        if self._full:
            if self._wake_timer is not None:
                self._wake_timer.cancel()
            delay = max(min(self._full.values()) - time.monotonic(), 0.0) + 0.001
            self._wake_timer = asyncio.get_running_loop().call_later(delay, self._new_job_event.set)
        return rows

    async def _process_job(self, context: job_context.JobContext) -> None:
        """Procrastinate's ``Worker._process_job`` (3.10; its source is pinned by
        ``tests/unit/test_engine_api_contract.py``), step for step, without its
        per-job overhead where nothing reads it: its log messages (each formats the
        job's call string) are built only when a record of their level would be
        emitted, and whether a task is async and its task middlewares are looked up
        once per task, not per job. A final outcome is put in the lane's batch without
        a task of its own (:meth:`_persist_final`); any other is persisted in its own
        task, shielded from the job's cancellation, as Procrastinate does. The outcome,
        the retry decision and the logs that are emitted are Procrastinate's."""
        # The timeout is the one of the lane running the job (its queue's lane).
        JOB_QUEUE.set(context.job.queue)
        job = context.job
        task = self.app.tasks.get(job.task_name)
        job_retry = None
        exc_info: bool | BaseException = False
        retry_decision = None
        job_result = job_context.JobResult(start_timestamp=context.start_timestamp)
        try:
            if not task:
                raise exceptions.TaskNotFound
            if self.logger.isEnabledFor(logging.INFO):
                self.logger.debug(
                    f"Loaded job info, about to start job {job.call_string}",
                    extra=self._log_extra(
                        context=context, action="loaded_job_info", job_result=job_result
                    ),
                )
                self.logger.info(
                    f"Starting job {job.call_string}",
                    extra=self._log_extra(
                        context=context, action="start_job", job_result=job_result
                    ),
                )
            run_task = self._task_runner(task, context)
            job_result.result = await middleware.compose(
                self.worker_middleware, run_task, context, self
            )()
        except BaseException as e:
            exc_info = e
            # An aborted job can be retried if its abort was a shutdown's.
            if not isinstance(e, exceptions.JobAborted) or (
                context.abort_reason() == job_context.AbortReason.SHUTDOWN
            ):
                job_retry = task.get_retry_exception(exception=e, job=job) if task else None
                retry_decision = job_retry.retry_decision if job_retry else None
                if isinstance(e, exceptions.TaskNotFound):
                    self.logger.exception(
                        "Task was not found",
                        extra=self._log_extra(
                            context=context,
                            action="task_not_found",
                            exception=str(e),
                            job_result=job_result,
                        ),
                    )
        finally:
            job_result.end_timestamp = time.time()
            if isinstance(exc_info, (exceptions.JobAborted, asyncio.CancelledError)):
                status = jobs.Status.ABORTED
            elif exc_info:
                status = jobs.Status.FAILED
            else:
                status = jobs.Status.SUCCEEDED
            aborted = status == jobs.Status.ABORTED
            if (
                aborted
                and context.abort_reason() == job_context.AbortReason.SHUTDOWN
                and not api.shutdown_requeues(job.task_name)
            ):
                # Cut by our shutdown mid-run, and not rerun_safe: failed for a human
                # to decide (the reaper's rule for a dead worker's jobs), never re-run.
                status, job_retry, retry_decision = jobs.Status.FAILED, None, None
                logger.warning(
                    f"lane {self.lane.name}: job {job.id} ({job.task_name}) cut by the "
                    "shutdown: failed, not requeued (the task is not marked rerun_safe)",
                    extra={"action": "job_failed_on_shutdown", "lane": self.lane.name},
                )
            final_failure = status == jobs.Status.FAILED and not job_retry
            if _ENGINE_WORKER_LOGGER.isEnabledFor(logging.ERROR if final_failure else logging.INFO):
                self._log_job_outcome(status, context, job_result, job_retry, exc_info)
            if retry_decision is None and not aborted:
                await self._persist_final(job, status, context, job_result)
            else:
                await self._persist_shielded(job, status, retry_decision, context, job_result)

    async def _persist_shielded(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        context: job_context.JobContext,
        job_result: job_context.JobResult,
        *,
        pending: asyncio.Future[None] | None = None,
    ) -> None:
        """Procrastinate's persisting of a job's status: in a task of its own, shielded
        from the job's cancellation (a cancelled job waits for it, then is cancelled)."""
        persist_job_status_task = asyncio.create_task(
            self._persist_job_status(
                job, status, retry_decision, context, job_result, pending=pending
            )
        )
        try:
            await asyncio.shield(persist_job_status_task)
        except asyncio.CancelledError:
            await persist_job_status_task
            raise

    async def _persist_final(
        self,
        job: jobs.Job,
        status: jobs.Status,
        context: job_context.JobContext,
        job_result: job_context.JobResult,
    ) -> None:
        """A final outcome (succeeded, failed without retry), as
        :meth:`_persist_shielded` writes it, without a task per job: the outcome joins
        the lane's batch at once and the job waits for that write, shielded. If the job
        is cancelled meanwhile, or the write fails, the rest is
        :meth:`_persist_shielded`'s (it waits for the write, and retries a failed one
        as :meth:`_persist_job_status` does)."""
        try:
            future = self._submit_ack(job, status)
        except Exception:  # a bug: the full path logs it, retries, hands the job over
            await self._persist_shielded(job, status, None, context, job_result)
            return
        try:
            await asyncio.shield(future)
        except asyncio.CancelledError:
            # The write goes on: wait for it (and retry it if it fails), then be cancelled.
            await self._persist_shielded(job, status, None, context, job_result, pending=future)
            raise
        except Exception:
            # The write failed: retried (or the job handed to the reaper) as always.
            await self._persist_shielded(job, status, None, context, job_result, pending=future)
            return
        assert job.id is not None
        self._job_ids_to_abort.pop(job.id, None)
        self.jobs_done += 1

    def _task_runner(
        self, task: Any, context: job_context.JobContext
    ) -> Callable[[], Awaitable[Any]]:
        """Procrastinate's ``ensure_async`` for ``task``: the call of the task through
        its task middlewares, awaited (a sync task in a thread)."""
        found = self._task_shapes.get(task.name)
        if found is None or found[0] is not task:
            is_async = inspect.iscoroutinefunction(task.func)
            found = (task, is_async, self._resolve_task_middlewares(task, is_async))
            self._task_shapes[task.name] = found
        _, is_async, task_middlewares = found
        job = context.job
        job_args = [context] if task.pass_context else []

        if is_async:

            async def run_async_task() -> Any:
                return await task(*job_args, **job.task_kwargs)

            async def run_async() -> Any:
                if task_middlewares:
                    composed = middleware.compose(task_middlewares, run_async_task, context, self)
                    result = await composed()
                else:
                    result = await task(*job_args, **job.task_kwargs)
                # What the task returned may itself be awaitable (Procrastinate awaits it).
                return await result if inspect.isawaitable(result) else result

            return run_async

        def run_sync_task() -> Any:
            return task(*job_args, **job.task_kwargs)

        async def run_sync() -> Any:
            result = await utils.sync_to_async(
                middleware.compose(task_middlewares, run_sync_task, context, self)
            )
            # A sync task function may return an awaitable (Procrastinate awaits it).
            return await result if inspect.isawaitable(result) else result

        return run_sync

    def _start_job(self, job: jobs.Job) -> None:
        job_id = job.id
        context = job_context.JobContext(
            app=self.app,
            worker_name=self.worker_name,
            worker_queues=self.queues,
            additional_context=self.additional_context.copy() if self.additional_context else {},
            job=job,
            abort_reason=functools.partial(self._job_ids_to_abort.get, job_id),
            start_timestamp=time.time(),
        )
        job_task = asyncio.create_task(
            self._process_job(context), name=f"process job {job.task_name}[{job.id}]"
        )
        self._running_jobs[job_task] = context

        def on_job_complete(task: asyncio.Task[Any]) -> None:
            del self._running_jobs[task]
            if job_id in self._slot_given_back:
                self._slot_given_back.discard(job_id)  # its task ended before its ack
            else:
                self._job_semaphore.release()
            if job.lock is not None:
                # The next job of this lock just became claimable, and nothing sends a
                # NOTIFY for that: fetch now rather than at the next poll.
                self._new_job_event.set()
            if self._full_by_concurrency:
                # A key at its concurrency may have room now.
                for bucket in self._full_by_concurrency:
                    self._full.pop(bucket, None)
                self._full_by_concurrency.clear()
                self._new_job_event.set()

        job_task.add_done_callback(on_job_complete)

    async def _persist_job_status(
        self,
        job: jobs.Job,
        status: jobs.Status,
        retry_decision: retry.RetryDecision | None,
        context: job_context.JobContext,
        job_result: job_context.JobResult | None,
        *,
        pending: asyncio.Future[None] | None = None,
    ) -> None:
        """Write the job's outcome; ``pending``: the lane's batch is already writing
        it (:meth:`_persist_final`), wait for that write first."""
        if (
            status == jobs.Status.ABORTED
            and retry_decision is None
            and context.abort_reason() == job_context.AbortReason.SHUTDOWN
        ):
            # Interrupted by our own shutdown, not by an operator: run it again.
            retry_decision = retry.RetryDecision(retry_in={"seconds": 0})
            logger.info(
                f"lane {self.lane.name}: job {job.id} interrupted by shutdown, requeued",
                extra={"action": "job_requeued_on_shutdown", "lane": self.lane.name},
            )
        delay = FETCH_RETRY_MIN_SECONDS
        errors = 0
        while True:
            try:
                if pending is not None:  # the batch's write of this outcome, under way
                    future, pending = pending, None
                    await future
                    assert job.id is not None
                    self._job_ids_to_abort.pop(job.id, None)
                elif retry_decision is None:  # final: batched
                    await self._acknowledge(job, status)
                else:
                    await super()._persist_job_status(
                        job, status, retry_decision, context, job_result
                    )
                self.jobs_done += 1
                return
            except exceptions.ConnectorException as exc:
                if is_connection_error(exc):
                    if self._hard_stop.is_set():
                        raise
                    logger.warning(
                        f"lane {self.lane.name}: cannot record the outcome of job {job.id} "
                        f"({status.value}); retrying in {delay:.1f} s",
                        extra={"action": "persist_retry", "lane": self.lane.name, "job_id": job.id},
                    )
                    if await wait_or_timeout(self._hard_stop, delay):
                        raise
                    delay = min(delay * 2, PERSIST_RETRY_MAX_SECONDS)
                    continue
                # The retry would be a second waiting job of the lock: merge it into the
                # sibling already waiting, and finish this one. (No sibling any more: it
                # started meanwhile, and the retry may pass at the next try.)
                if (
                    retry_decision is not None
                    and is_queueing_lock_conflict(exc)
                    and await self._merge_into_waiting_sibling(job)
                ):
                    status, retry_decision = jobs.Status.FAILED, None
                    continue
                error: Exception = exc
            except Exception as exc:  # a bug or an unexpected answer: never a wedge
                error = exc
            errors += 1
            logger.error(
                f"lane {self.lane.name}: cannot record the outcome of job {job.id} "
                f"({status.value}): {type(error).__name__}: {error} "
                f"({errors}/{PERSIST_MAX_ERRORS})",
                extra={"action": "persist_failed", "lane": self.lane.name, "job_id": job.id},
            )
            if errors >= PERSIST_MAX_ERRORS:
                await self._hand_to_reaper(job)
                return
            if await wait_or_timeout(self._hard_stop, delay):
                await self._hand_to_reaper(job)
                return
            delay = min(delay * 2, PERSIST_RETRY_MAX_SECONDS)

    async def _acknowledge(self, job: jobs.Job, status: jobs.Status) -> None:
        """Procrastinate's finish of a job, in the lane's batch of acknowledgements
        (jobsys.engine.acks); returns once it is committed."""
        await self._submit_ack(job, status)
        assert job.id is not None
        self._job_ids_to_abort.pop(job.id, None)

    def _submit_ack(self, job: jobs.Job, status: jobs.Status) -> asyncio.Future[None]:
        """Put the job's outcome in the lane's batch; the future is done once the
        batch's write committed (or failed)."""
        assert job.id is not None
        delete_job = {
            jobs.DeleteJobCondition.ALWAYS: True,
            jobs.DeleteJobCondition.NEVER: False,
            jobs.DeleteJobCondition.SUCCESSFUL: status == jobs.Status.SUCCEEDED,
        }[self.delete_jobs]
        if job.id not in self._slot_given_back:
            # Its task has returned: the slot may take the next job while the outcome
            # is being written (the claim's round trip overlaps the batch's commit).
            # The job stays in the running set until the ack commits.
            self._slot_given_back.add(job.id)
            self._job_semaphore.release()
        return self.acks.submit(job.id, status.value, delete_job=delete_job)

    async def _merge_into_waiting_sibling(self, job: jobs.Job) -> bool:
        assert job.id is not None
        sibling = await manager.merge_retry_into_sibling(self.app.connector, job.id)
        if sibling is None:
            return False
        logger.warning(
            f"lane {self.lane.name}: job {job.id} cannot be retried: job {sibling} with the "
            f"same queueing lock {job.queueing_lock!r} is already waiting and will do the "
            "work; finishing this one as failed",
            extra={
                "action": "retry_merged",
                "lane": self.lane.name,
                "job_id": job.id,
                "sibling_job_id": sibling,
                "queueing_lock": job.queueing_lock,
            },
        )
        return True

    async def _hand_to_reaper(self, job: jobs.Job) -> None:
        """Detach the job from this worker: the reaper's dead-worker rules settle a
        ``doing`` job without a worker at their next pass."""
        assert job.id is not None
        try:
            await manager.hand_to_reaper(self.app.connector, job.id)
        except Exception as exc:
            logger.critical(
                f"lane {self.lane.name}: job {job.id} could be neither recorded nor handed "
                f"to the reaper ({type(exc).__name__}); it stays doing until this worker "
                "stops",
                extra={"action": "persist_lost", "lane": self.lane.name, "job_id": job.id},
            )
            return
        logger.error(
            f"lane {self.lane.name}: job {job.id} handed to the reaper (its outcome could "
            "not be recorded)",
            extra={"action": "job_handed_to_reaper", "lane": self.lane.name, "job_id": job.id},
        )

    async def _shutdown(self, side_tasks: list[asyncio.Task[Any]]) -> None:
        await utils.cancel_and_capture_errors(side_tasks)
        if self._running_jobs and not self._hard_stop.is_set():
            logger.info(
                f"lane {self.lane.name}: waiting up to {self.shutdown_graceful_timeout:g} s "
                f"for {len(self._running_jobs)} running job(s)",
                extra={"action": "draining", "lane": self.lane.name},
            )
            hard = asyncio.create_task(self._hard_stop.wait())
            deadline = time.monotonic() + (self.shutdown_graceful_timeout or 0.0)
            while self._running_jobs and not hard.done() and time.monotonic() < deadline:
                await asyncio.wait(
                    [*self._running_jobs, hard],
                    timeout=deadline - time.monotonic(),
                    return_when=asyncio.FIRST_COMPLETED,
                )
            hard.cancel()
        if self._running_jobs:
            await self._abort_running_jobs()
        if self.abandoned:
            # Keep the procrastinate_workers row: deleting it would detach the
            # abandoned jobs from this worker, and the reaper needs the link.
            logger.error(
                f"lane {self.lane.name}: {len(self.abandoned)} job(s) could not be "
                "stopped; leaving them to the reaper",
                extra={
                    "action": "jobs_abandoned",
                    "lane": self.lane.name,
                    "job_ids": [c.job.id for c in self.abandoned],
                },
            )
        elif self.worker_id is not None:
            try:
                await self.app.job_manager.unregister_worker(self.worker_id)
            except exceptions.ConnectorException:
                logger.warning(
                    f"lane {self.lane.name}: could not unregister (database unreachable)",
                    extra={"action": "unregister_failed", "lane": self.lane.name},
                )
        logger.info(
            f"lane {self.lane.name}: stopped",
            extra={"action": "stop_lane", "lane": self.lane.name},
        )

    async def _abort_running_jobs(self) -> None:
        logger.info(
            f"lane {self.lane.name}: {len(self._running_jobs)} job(s) still running after "
            "the grace period: aborting them (requeued if rerun_safe, else failed)",
            extra={"action": "abort_running_jobs", "lane": self.lane.name},
        )
        for task, context in list(self._running_jobs.items()):
            self._abort_job(task, context, job_context.AbortReason.SHUTDOWN)
        # Cancelled async jobs record their requeue; sync ones only get a moment to
        # notice context.should_abort() before they are abandoned.
        running = list(self._running_jobs.items())
        cancelled = [t for t, c in running if not self.is_sync_task(c.job.task_name)]
        uncancellable = [t for t, c in running if self.is_sync_task(c.job.task_name)]
        if cancelled:
            await asyncio.wait(cancelled, timeout=ABORT_SETTLE_SECONDS)
        if uncancellable:
            await asyncio.wait(uncancellable, timeout=SYNC_ABORT_SETTLE_SECONDS)
        self.abandoned = list(self._running_jobs.values())
