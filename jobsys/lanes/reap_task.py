"""The built-in task ``jobsys.reap``: one reaper pass, run from the schedule
(entry ``reap_dead_workers`` in ``config/schedule.yaml``) on the ``maintenance``
queue. Every worker process also runs :class:`jobsys.lanes.reaper.ReaperService`;
this task is the backstop when, say, only a scheduler is running.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from jobsys.config.application import config_for
from jobsys.tasks import task

if TYPE_CHECKING:
    from jobsys.engine.api import JobContext


REAP_TASK = "jobsys.reap"


@task(
    queue="maintenance",
    name=REAP_TASK,
    pass_context=True,
    rerun_safe=True,
    account_arg=None,
    profile_arg=None,
)
async def reap(context: JobContext, **_schedule_args: Any) -> dict[str, int]:
    """Recover the jobs of dead workers (see ``jobsys.lanes.reaper``)."""
    from jobsys.lanes.reaper import reap_once

    result = await reap_once(context.app, config_for(context))
    return result.counts()
