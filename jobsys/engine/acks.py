"""Batched acknowledgement: many jobs' outcomes in one statement and one commit.

A lane used to write each job's outcome with its own ``procrastinate_finish_job_v1``
call (one round trip and one commit per job). :class:`FinishBatcher` collects the
outcomes of the lane's jobs whose task has returned and writes them together in one
set-based statement (``queries.FINISH_JOBS``: Procrastinate's rules for an outcome,
applied to all rows at once; the status events are written per statement, migration
0024). A job the statement could not finish (no longer ``todo`` or ``doing``), or a
second outcome for one job, is then written alone through Procrastinate's own
``procrastinate_finish_job_v1`` (``queries.FINISH_JOB``), so its error is
Procrastinate's, and that job's alone.

A batch is written as soon as one of these holds, whichever comes first:

- every running job of the lane not in a batch being written is waiting for its
  acknowledgement (waiting longer gains nothing: no other job can join);
- it holds ``max_jobs`` outcomes;
- its first outcome has waited ``max_delay_seconds`` (the most a batch adds to a
  job's end, :data:`FINISH_BATCH_MAX_DELAY_SECONDS`).

The guarantees are the single write's: :meth:`FinishBatcher.finish` returns only once
the outcome is committed, so the job keeps its slot, stays in the lane's running set
(never an orphan) and is reported finished only then. An outcome not yet written when
the process dies (kill -9, a fence) is simply not in the database: the job is still
``doing`` under a dead worker and the reaper settles it by the dead-worker rules, as
for a job that was running. If the batch's statement fails on a connection error,
every caller gets that error and retries as before; on any other error each outcome is
written on its own, so one job's error is that job's alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from jobsys.engine import queries

logger = logging.getLogger("jobsys.lanes")

#: The most a batch waits for more outcomes after its first (the delay it may add).
FINISH_BATCH_MAX_DELAY_SECONDS = 0.005
#: The most outcomes one statement writes.
FINISH_BATCH_MAX_JOBS = 100


def is_connection_error(exc: BaseException) -> bool:
    """A database that cannot be reached (worth retrying), not a query that failed."""
    import psycopg
    from procrastinate import utils

    return any(isinstance(e, psycopg.OperationalError) for e in utils.causes(exc))


class FinishBatcher:
    """Writes the outcomes of one lane's jobs in batches (see the module docstring)."""

    def __init__(
        self,
        connector: Any,
        *,
        waiting_jobs: Callable[[], int],
        max_jobs: int = FINISH_BATCH_MAX_JOBS,
        max_delay_seconds: float = FINISH_BATCH_MAX_DELAY_SECONDS,
    ) -> None:
        self.connector = connector
        #: How many jobs could still join a batch (the lane's running jobs).
        self.waiting_jobs = waiting_jobs
        self.max_jobs = max_jobs
        self.max_delay_seconds = max_delay_seconds
        self._pending: list[tuple[int, str, bool, asyncio.Future[None]]] = []
        self._timer: asyncio.TimerHandle | None = None
        self._flushes: set[asyncio.Task[None]] = set()
        #: Outcomes of batches being written (their jobs are still running jobs).
        self._in_flight = 0
        #: Statements written and outcomes they carried (for tests and the bench).
        self.batches = 0
        self.outcomes = 0

    async def finish(self, job_id: int, status: str, *, delete_job: bool = False) -> None:
        """Record ``job_id`` as ``status`` (succeeded/failed/aborted); returns once
        committed, raises what the write raised."""
        await self.submit(job_id, status, delete_job=delete_job)

    def submit(self, job_id: int, status: str, *, delete_job: bool = False) -> asyncio.Future[None]:
        """:meth:`finish` without waiting: the future is done once the outcome is
        committed (its exception: what the write raised)."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((job_id, status, delete_job, future))
        # Outcomes already being written cannot join this batch.
        could_join = self.waiting_jobs() - self._in_flight
        if len(self._pending) >= min(self.max_jobs, max(could_join, 1)):
            self._flush()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.max_delay_seconds, self._flush)
        return future

    def _flush(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        batch, self._pending = self._pending, []
        if not batch:
            return
        self._in_flight += len(batch)
        task = asyncio.create_task(self._write(batch), name="finish jobs")
        self._flushes.add(task)

        def written(done: asyncio.Task[None]) -> None:
            self._flushes.discard(done)
            self._in_flight -= len(batch)

        task.add_done_callback(written)

    async def _write(self, batch: list[tuple[int, str, bool, asyncio.Future[None]]]) -> None:
        from procrastinate import exceptions

        # One outcome per job in the statement: a second outcome for the same job (a
        # caller's mistake) goes on its own after it, and gets Procrastinate's error.
        first: dict[int, tuple[int, str, bool, asyncio.Future[None]]] = {}
        for item in batch:
            first.setdefault(item[0], item)
        ordered = sorted(first.values(), key=lambda item: item[0])
        try:
            rows = await self.connector.execute_query_all_async(
                queries.FINISH_JOBS,
                ids=[job_id for job_id, _, _, _ in ordered],
                statuses=[status for _, status, _, _ in ordered],
                deletes=[delete for _, _, delete, _ in ordered],
            )
        except Exception as exc:
            if isinstance(exc, exceptions.ConnectorException) and is_connection_error(exc):
                for *_, future in batch:
                    _settle(future, exc)
                return
            if len(batch) > 1:
                logger.debug(
                    f"a batch of {len(batch)} outcomes failed ({type(exc).__name__}); "
                    "writing each on its own",
                    extra={"action": "finish_batch_split", "jobs": len(batch)},
                )
            await self._write_each(batch)
            return
        written = {int(row["id"]) for row in rows}
        self.batches += 1
        self.outcomes += len(written)
        done = [item for item in ordered if item[0] in written]
        for *_, future in done:
            _settle(future, None)
        # Not finished by the batch (or a second outcome for one job): written alone,
        # for Procrastinate's error.
        await self._write_each([item for item in batch if item not in done])

    async def _write_each(self, batch: list[tuple[int, str, bool, asyncio.Future[None]]]) -> None:
        for job_id, status, delete, future in batch:
            try:
                await self.connector.execute_query_async(
                    queries.FINISH_JOB, id=job_id, status=status, delete=delete
                )
            except Exception as exc:
                _settle(future, exc)
            else:
                self.batches += 1
                self.outcomes += 1
                _settle(future, None)


def _settle(future: asyncio.Future[None], error: BaseException | None) -> None:
    if future.done():  # its caller was cancelled: nobody is waiting
        return
    if error is None:
        future.set_result(None)
    else:
        future.set_exception(error)
