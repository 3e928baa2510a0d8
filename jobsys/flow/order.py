"""The order in which a lane takes its queues (``order`` in queues.yaml). Pure.

``strict`` is the listed order. ``weights`` is Sidekiq's weighted random order: each
claim draws the queues one by one without replacement, each with a chance in
proportion to its weight, so with every queue busy a queue of weight 3 leads three
times as often as one of weight 1, and a queue with nothing due never holds the others
back (the claim takes the next queue's jobs).
"""

from __future__ import annotations

import random

from jobsys.config import LaneSpec


def weighted_order(
    queues: tuple[str, ...], weights: tuple[int, ...], rng: random.Random
) -> list[str]:
    """``queues`` in a random order drawn in proportion to ``weights`` (same length)."""
    pool = list(zip(queues, weights, strict=True))
    order = []
    while pool:
        pick = rng.uniform(0, sum(w for _, w in pool))
        for i, (queue, weight) in enumerate(pool):
            pick -= weight
            if pick <= 0 or i == len(pool) - 1:
                order.append(queue)
                del pool[i]
                break
    return order


def claim_order(lane: LaneSpec, rng: random.Random) -> tuple[list[str], bool]:
    """(the lane's queues in the order this claim takes them, whether that order binds)."""
    if lane.order == "strict":
        return list(lane.queues), True
    if lane.order == "weights":
        return weighted_order(lane.queues, lane.weights, rng), True
    return list(lane.queues), False
