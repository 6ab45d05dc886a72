"""Budget repair: after read-off, remove or restore the cheapest channels until the measured cost meets
the target. "Cheapest" = lowest gate score (the gate's own ranking of what the network can spare).

Cost is monotone in the removal set, so each direction is a bisection over one ranked list: at most
about log2(channels) cost measurements (exact FLOPs, or measured latency).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from graphprune.errors import GraphpruneError
from graphprune.graph import PrunableGraph
from graphprune.plan import PruningPlan

Cost = Callable[[PruningPlan], float]


class BudgetError(GraphpruneError):
    """The budget cannot be met within the limits on how much of each group may go."""


def _plan(pg: PrunableGraph, removed: dict[str, set[int]], blocks: list[str]) -> PruningPlan:
    plan = PruningPlan.for_graph(pg)
    for gid, idx in removed.items():
        if idx:
            plan.remove_channels(gid, sorted(idx))
    for b in blocks:
        plan.remove_block(b)
    return plan


def repair(
    pg: PrunableGraph,
    plan: PruningPlan,
    scores: dict[str, np.ndarray],
    cost: Cost,
    target: float,
    *,
    max_ratio: float = 0.9,
) -> tuple[PruningPlan, dict[str, float | int]]:
    """The plan nearest to `plan` whose `cost` is <= `target`: the lowest-scoring kept channels go while
    it is over; while under, the highest-scoring removed channels come back as long as it stays within.
    Blocks in `plan` stay removed. Returns the plan and what was done (cost before / after, moves)."""
    removed = {gid: set(plan.channels.get(gid, ())) for gid in scores}
    blocks = list(plan.blocks)
    before = cost(_plan(pg, removed, blocks))
    seen: dict[tuple[str, int], float] = {}  # each candidate measured once (latency is noisy)

    def measured(direction: str, n: int, make: Callable[[int], PruningPlan]) -> float:
        if (direction, n) not in seen:
            seen[(direction, n)] = before if n == 0 else cost(make(n))
        return seen[(direction, n)]

    if before > target:
        caps = {gid: min(len(s) - 1, int(math.floor(len(s) * max_ratio))) for gid, s in scores.items()}
        ranked = sorted(
            (float(s[i]), gid, int(i))
            for gid, s in scores.items()
            for i in range(len(s))
            if i not in removed[gid]
        )
        count = {gid: len(idx) for gid, idx in removed.items()}
        moves = []
        for _, gid, i in ranked:
            if count[gid] < caps[gid]:
                count[gid] += 1
                moves.append((gid, i))

        def with_removed(n: int) -> PruningPlan:
            extra = {gid: set(idx) for gid, idx in removed.items()}
            for gid, i in moves[:n]:
                extra[gid].add(i)
            return _plan(pg, extra, blocks)

        if measured("remove", len(moves), with_removed) > target:
            raise BudgetError(
                f"cost target {target:.6g} is out of reach: removing {max_ratio:.0%} of every group leaves "
                f"{measured('remove', len(moves), with_removed):.6g}"
            )
        lo, hi = 0, len(moves)
        while lo < hi:  # fewest removals meeting the target
            mid = (lo + hi) // 2
            if measured("remove", mid, with_removed) <= target:
                hi = mid
            else:
                lo = mid + 1
        result, n_moved, after = with_removed(lo), lo, measured("remove", lo, with_removed)
    else:
        back = sorted(
            ((float(scores[gid][i]), gid, i) for gid, idx in removed.items() for i in idx), reverse=True
        )

        def with_restored(n: int) -> PruningPlan:
            fewer = {gid: set(idx) for gid, idx in removed.items()}
            for _, gid, i in back[:n]:
                fewer[gid].discard(i)
            return _plan(pg, fewer, blocks)

        lo, hi = 0, len(back)
        while lo < hi:  # most restorations staying within the target
            mid = (lo + hi + 1) // 2
            if measured("restore", mid, with_restored) <= target:
                lo = mid
            else:
                hi = mid - 1
        result, n_moved, after = with_restored(lo), -lo, measured("restore", lo, with_restored)
    result.meta.update(plan.meta)
    return result, {"cost_before_repair": before, "cost_after_repair": after, "repair_moves": n_moved}
