"""The one door to Procrastinate.

Only this package imports ``procrastinate`` or names a ``procrastinate_*`` object
(table, SQL function, channel); ``migrations/`` is the other exception. Its modules:

- :mod:`.queries`: every SQL statement that names a Procrastinate object, by name;
- :mod:`.manager`: named operations on jobs (claim, finish, retry, cancel, wake, ...);
- :mod:`.inserts`: the one insert path (new jobs, fan-out batches, retries), called
  only by ``jobsys.jobs.enqueue``, which also announces every insert;
- :mod:`.dead_workers`: the reaper's reads and state changes on jobs and workers;
- :mod:`.worker`: ``LaneWorker``, one lane as a Procrastinate ``Worker``;
- :mod:`.pool`: the connector and pool of a worker process, and the one way to borrow
  a connection of a running App (``pool.connection(app)``);
- :mod:`.listener`: the one LISTEN connection of a worker process;
- :mod:`.channels`: Procrastinate's NOTIFY channels and payloads;
- :mod:`.app`: building a Procrastinate ``App`` from jobsys's task registry;
- :mod:`.api`: the Procrastinate classes domains use (contexts, retry strategies,
  exceptions), re-exported;
- :mod:`.schema`: the pinned Procrastinate schema version.

What jobsys relies on in Procrastinate is pinned by two contract tests: public and
private names in ``tests/unit/test_engine_api_contract.py``; SQL function signatures,
columns and channel payloads in ``tests/integration/test_engine_schema_contract.py``.

This module stays import-light (no Procrastinate import): the CLI imports it at start.
"""

from __future__ import annotations

#: The library's top-level package (stack frames from it are not the application's).
PACKAGE = "procrastinate"
#: Its loggers: every one is under this name.
LOGGER = PACKAGE
#: Its worker's logger (per-job lines; jobsys logs its own).
WORKER_LOGGER = f"{PACKAGE}.worker"
#: Dotted class names as failure rows record them (``module.qualname``).
JOB_ABORTED_CLASS = f"{PACKAGE}.exceptions.JobAborted"
TASK_NOT_FOUND_CLASS = f"{PACKAGE}.exceptions.TaskNotFound"
#: Prefix of every database object Procrastinate's schema creates.
OBJECT_PREFIX = f"{PACKAGE}_"
