"""Procrastinate's NOTIFY channels and the payloads its listeners understand.

Procrastinate 3.10 NOTIFYs ``procrastinate_queue_v1#<queue>`` and
``procrastinate_any_queue_v1`` on every abort request (its trigger), with
``{"type": "abort_job_requested", "job_id": ...}``; on an insert, jobsys's statement
trigger (migration 0024, in place of Procrastinate's per-row one) sends
``{"type": "job_inserted", "job_id": ...}`` on both once per queue that got jobs. A retried
or requeued job is an update, which sends nothing: :mod:`jobsys.engine.manager`
sends the same wake-up itself.
"""

from __future__ import annotations

import json

QUEUE_CHANNEL_PREFIX = "procrastinate_queue_v1#"
ANY_QUEUE_CHANNEL = "procrastinate_any_queue_v1"
JOB_INSERTED = "job_inserted"
ABORT_REQUESTED = "abort_job_requested"


def queue_channel(queue: str) -> str:
    return QUEUE_CHANNEL_PREFIX + queue


def queue_of(channel: str) -> str | None:
    """The queue a per-queue channel is for; None for any other channel."""
    if channel.startswith(QUEUE_CHANNEL_PREFIX):
        return channel[len(QUEUE_CHANNEL_PREFIX) :]
    return None


def job_ready_payload(job_id: int) -> str:
    """The payload Procrastinate's listener expects for a job ready to run."""
    return json.dumps({"type": JOB_INSERTED, "job_id": job_id})
