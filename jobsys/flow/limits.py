"""Flow limits (``throttle`` in queues.yaml): rates and concurrency per queue, per task,
per key. Pure: which limits a lane's claim must honour, and which of the claimable
jobs a claim may take given what runs and what started recently.

Each limited job falls in one bucket, ``kind:target:key`` (``queue:profiles:42``;
the key is empty without ``per_key``); a task's limit wins over its queue's. Starts
are recorded per bucket (``jobsys_flow_starts``): the running count is the recorded
starts whose job is still ``doing``, the rate count the starts in the last window.
The claim reads both under a lock per bucket, in a statement that follows the lock,
so two workers on two hosts never both take the last free place.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from jobsys.config.models import parse_rate

if TYPE_CHECKING:
    from jobsys.config import Config, LaneSpec

#: Starts are counted over the window plus this much: a job's start is recorded as its
#: planned start when it really starts within half of this after it (else as its real
#: start less that half: jobsys.flow.store.MARK_START), and the other half covers the
#: moment between that record and the task's first line; neither may let N+1 real
#: starts into a window.
RATE_MARGIN_SECONDS = 0.02
#: How many due jobs a limited claim looks at per free slot (jobs over their limits are
#: passed over, not waited behind).
SCAN_PER_SLOT = 4
SCAN_MIN = 50
#: A bucket full because of its concurrency is tried again after this long (sooner when
#: one of its jobs ends in this process).
CONCURRENCY_RECHECK_SECONDS = 1.0
#: A job under a rate may be claimed this long before its window has room; it then
#: waits in its worker until that moment (so claiming never costs the window time).
RATE_LEAD_SECONDS = 0.2
#: Until a rated job records its real start, its start counts as its planned start plus
#: this much: a claim in between must not count it earlier than it will run.
UNMARKED_PAD_SECONDS = 0.25


@dataclass(frozen=True)
class Limit:
    kind: str  # "queue" or "task"
    target: str
    per_key: str | None
    rate: tuple[int, float] | None  # (starts, window seconds)
    concurrency: int | None

    @property
    def prefix(self) -> str:
        return f"{self.kind}:{self.target}:"

    @property
    def window_seconds(self) -> float:
        return self.rate[1] + RATE_MARGIN_SECONDS if self.rate else 0.0


@dataclass(frozen=True)
class BucketState:
    running: int
    #: The starts in the last window, oldest first, in seconds from now (<= 0).
    recent: tuple[float, ...] = ()


@dataclass
class Decision:
    ids: list[int]
    buckets: list[str]  # the bucket of each id taken that has one ('' for none)
    full: dict[str, float]  # bucket -> seconds after which to try it again
    #: job id -> seconds from now before which it must not start (rate lead).
    not_before: dict[int, float] = field(default_factory=dict)
    #: Every id taken under a rate -> its not_before (0: at once): their real start is
    #: recorded just before they run (jobsys.flow.watch.start_middleware).
    rated: dict[int, float] = field(default_factory=dict)


def limits_of(config: Config) -> list[Limit]:
    """queues.yaml's ``throttle`` entries, then the limits declared on the tasks this
    process has registered (``@task(rate=..., concurrency=..., per_key=...)``) that
    queues.yaml does not override. A task's limit that does not parse (``config check``
    refuses it) is left out."""
    from jobsys import tasks

    queues = set(config.all_queues)
    out = []
    for target, throttle in sorted(config.queues.throttle.items()):
        out.append(
            Limit(
                kind="queue" if target in queues else "task",
                target=target,
                per_key=throttle.per_key,
                rate=parse_rate(throttle.rate) if throttle.rate else None,
                concurrency=throttle.concurrency,
            )
        )
    for name, spec in sorted(tasks.registry().items()):
        if name in config.queues.throttle or (spec.rate is None and spec.concurrency is None):
            continue
        try:
            rate = parse_rate(spec.rate) if spec.rate else None
        except ValueError:
            continue
        if spec.concurrency is not None and spec.concurrency < 1:
            continue
        out.append(Limit("task", name, spec.per_key, rate, spec.concurrency))
    return out


def for_lane(config: Config | None, lane: LaneSpec) -> list[Limit]:
    """The limits a lane's claim must honour: its queues' and every task's."""
    if config is None:
        return []
    return [
        limit for limit in limits_of(config) if limit.kind == "task" or limit.target in lane.queues
    ]


def bucket_of(
    task: str, queue: str, args: dict[str, object], limits: list[Limit]
) -> tuple[Limit, str] | None:
    """The limit a job falls under and its bucket (as the claim computes it)."""
    found = next((x for x in limits if x.kind == "task" and x.target == task), None)
    found = found or next((x for x in limits if x.kind == "queue" and x.target == queue), None)
    if found is None:
        return None
    value = args.get(found.per_key) if found.per_key else None
    key = "" if value is None else (str(value).lower() if isinstance(value, bool) else str(value))
    return found, found.prefix + key


def limit_of(bucket: str, limits: list[Limit]) -> Limit | None:
    return next((limit for limit in limits if bucket.startswith(limit.prefix)), None)


def decide(
    candidates: list[tuple[int, str | None]],
    states: dict[str, BucketState],
    limits: list[Limit],
    slots: int,
) -> Decision:
    """Of ``candidates`` (job id, bucket), in claim order, the ones to take: at most
    ``slots``, none that would put its bucket over a limit. A job under a rate whose
    window has room within ``RATE_LEAD_SECONDS`` is taken with the time it may start."""
    taken: dict[str, int] = {}
    starts: dict[str, list[float]] = {}
    decision = Decision(ids=[], buckets=[], full={})
    for job_id, bucket in candidates:
        if len(decision.ids) >= slots:
            break
        if not bucket:
            decision.ids.append(job_id)
            decision.buckets.append("")
            continue
        if bucket in decision.full:
            continue
        limit = limit_of(bucket, limits)
        state = states.get(bucket, BucketState(0))
        extra = taken.get(bucket, 0)
        if limit is not None and limit.concurrency and state.running + extra >= limit.concurrency:
            decision.full[bucket] = CONCURRENCY_RECHECK_SECONDS
            continue
        wait = 0.0
        if limit is not None and limit.rate:
            window = starts.setdefault(bucket, list(state.recent))
            if len(window) >= limit.rate[0]:
                # Room comes when the start rate[0] places back leaves the window.
                wait = max(window[len(window) - limit.rate[0]] + limit.window_seconds, 0.0)
                if wait > RATE_LEAD_SECONDS:
                    decision.full[bucket] = wait - RATE_LEAD_SECONDS
                    continue
            window.append(wait)
        taken[bucket] = extra + 1
        decision.ids.append(job_id)
        decision.buckets.append(bucket)
        if wait > 0:
            decision.not_before[job_id] = wait
        if limit is not None and limit.rate:
            decision.rated[job_id] = wait
    return decision


@dataclass(frozen=True)
class LanePolicy:
    """What the engine's limited claim (jobsys.engine.manager.claim_limited) asks of
    flow control for one lane: the limits as query parameters, each bucket's window,
    and the choice of what fits."""

    limits: tuple[Limit, ...]
    unmarked_pad_seconds: float = UNMARKED_PAD_SECONDS

    @property
    def ordered(self) -> list[Limit]:
        """Task limits first: a task's limit wins over its queue's."""
        return sorted(self.limits, key=lambda x: x.kind != "task")

    @property
    def kinds(self) -> tuple[str, ...]:
        return tuple(x.kind for x in self.ordered)

    @functools.cached_property
    def params(self) -> dict[str, Any]:
        """:meth:`sql_params`, computed once (the policy is frozen)."""
        return self.sql_params()

    def sql_params(self) -> dict[str, Any]:
        """The limits as the claim's parameters: ``limit_*_N`` per limit, and arrays by
        limit number (``limit_kinds``, ``limit_targets``, ``limit_prefixes``,
        ``limit_keys``, ``concurrency``, ``rate_count``, ``span``; None: no such limit);
        ``prefixes``: the limits' prefixes sorted (the order their locks are taken in)."""
        params: dict[str, Any] = {}
        for i, limit in enumerate(self.ordered):
            params[f"limit_target_{i}"] = limit.target
            params[f"limit_prefix_{i}"] = limit.prefix
            params[f"limit_key_{i}"] = limit.per_key
        params["prefixes"] = sorted(x.prefix for x in self.limits)
        # The same limits as arrays by limit number (the claim function's parameters).
        params["limit_kinds"] = [x.kind for x in self.ordered]
        params["limit_targets"] = [x.target for x in self.ordered]
        params["limit_prefixes"] = [x.prefix for x in self.ordered]
        params["limit_keys"] = [x.per_key for x in self.ordered]
        params["concurrency"] = [x.concurrency for x in self.ordered]
        params["rate_count"] = [x.rate[0] if x.rate else None for x in self.ordered]
        params["span"] = [x.window_seconds for x in self.ordered]
        return params

    def scan(self, slots: int) -> int:
        return max(slots * SCAN_PER_SLOT, SCAN_MIN)

    def window_of(self, bucket: str) -> float:
        found = limit_of(bucket, list(self.limits))
        return found.window_seconds if found else 0.0

    @property
    def longest_window_seconds(self) -> float:
        return max((x.window_seconds for x in self.limits), default=0.0)

    def decide(
        self,
        candidates: list[tuple[int, str | None]],
        states: dict[str, tuple[int, tuple[float, ...]]],
        slots: int,
    ) -> Decision:
        return decide(
            candidates,
            {b: BucketState(running, recent) for b, (running, recent) in states.items()},
            list(self.limits),
            slots,
        )


def policy_for_lane(config: Config | None, lane: LaneSpec) -> LanePolicy | None:
    """The lane's policy, or None when no limit concerns it (the one-statement claim)."""
    limits = for_lane(config, lane)
    return LanePolicy(tuple(limits)) if limits else None
