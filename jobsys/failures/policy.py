"""The retry policy per failure kind, as one Procrastinate retry strategy per task.

- authentication: never retried automatically (retrying burns the account);
- transient: exponential backoff with jitter, up to ``TaskSpec.transient_max_attempts``
  or ``retry.transient_max_attempts`` automatic attempts after the first;
- runtime: up to ``TaskSpec.max_attempts`` or ``retry.runtime_max_attempts`` (default 0:
  a runtime failure waits for an operator).

``job.attempts`` counts the attempts already finished, so the first failure sees 0.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from jobsys.engine.api import BaseRetryStrategy, RetryDecision
from jobsys.failures import classify

if TYPE_CHECKING:
    from jobsys.config import Config
    from jobsys.tasks import TaskSpec

#: Upper bound of one transient backoff, whatever the attempt number.
MAX_TRANSIENT_DELAY_SECONDS = 600.0
#: Fraction of the delay drawn at random, so retries of many jobs do not arrive together.
JITTER_FRACTION = 0.25


class KindRetryStrategy(BaseRetryStrategy):
    """Procrastinate retry strategy deciding by the failure's kind."""

    def __init__(self, spec: TaskSpec | None, config: Config) -> None:
        self.spec = spec
        self.rules = config.queues.classification
        retry = config.queues.retry
        self.base_delay = retry.transient_base_delay_seconds
        self.transient_max = (
            spec.transient_max_attempts
            if spec is not None and spec.transient_max_attempts is not None
            else retry.transient_max_attempts
        )
        self.runtime_max = (
            spec.max_attempts
            if spec is not None and spec.max_attempts is not None
            else retry.runtime_max_attempts
        )

    def max_retries(self, kind: str) -> int:
        if kind == classify.TRANSIENT:
            return self.transient_max
        if kind == classify.RUNTIME:
            return self.runtime_max
        return 0

    def delay_seconds(self, attempts: int) -> float:
        delay = min(self.base_delay * (2**attempts), MAX_TRANSIENT_DELAY_SECONDS)
        return delay * (1 - JITTER_FRACTION * random.random())

    def get_retry_decision(self, *, exception: BaseException, job: Any) -> RetryDecision | None:
        verdict = classify.classify(exception, self.spec, self.rules)
        if job.attempts >= self.max_retries(verdict.kind):
            return None
        if verdict.kind == classify.TRANSIENT:
            delay = timedelta(seconds=self.delay_seconds(job.attempts))
            return RetryDecision(retry_at=datetime.now(UTC) + delay)
        return RetryDecision(retry_at=None)


def retry_strategy(spec: TaskSpec | None, config: Config) -> KindRetryStrategy:
    """The strategy to pass as ``retry=`` when registering ``spec`` on Procrastinate."""
    return KindRetryStrategy(spec, config)
