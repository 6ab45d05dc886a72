"""Budget repair: after read-off, move channels until the measured cost meets the target, choosing them
by gate score per unit of cost (a greedy knapsack, `knapsack.fill`) and in whole rounding units.

The knapsack needs each unit's cost at the current plan. A `FlopsCost` is exact and cheap, so it is its
own estimate and is evaluated as often as the greedy needs. Any other cost (measured latency: slow and
noisy) is an opaque measurement: the knapsack runs on an estimate (the exact FLOPs by default, or a
latency predictor) under a budget `b` in the estimate's unit, and a bisection over `b` finds the largest
`b` whose plan measures within the target, in at most `max_evals` measurements.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np

from graphprune.efficiency import FlopsModel
from graphprune.errors import GraphpruneError
from graphprune.graph import PrunableGraph
from graphprune.methods.wgates.counts import min_kept
from graphprune.methods.wgates.knapsack import Removal, fill
from graphprune.plan import PruningPlan

Cost = Callable[[PruningPlan], float]


class BudgetError(GraphpruneError):
    """The budget cannot be met within the limits on how much of each group may go."""


class FlopsCost:
    """A plan's MACs by a FlopsModel (== count_flops of the applied plan): exact and cheap."""

    def __init__(self, model: FlopsModel) -> None:
        self.model = model

    def __call__(self, plan: PruningPlan) -> float:
        return float(self.model.flops(plan.channels, plan.blocks))


def _plan(pg: PrunableGraph, removed: Mapping[str, set[int]], blocks: list[str]) -> PruningPlan:
    plan = PruningPlan.for_graph(pg)
    for gid, idx in removed.items():
        if idx:
            plan.remove_channels(gid, sorted(idx))
    for b in blocks:
        plan.remove_block(b)
    return plan


def _lowest(scores: np.ndarray, keep: int) -> set[int]:
    """All but the `keep` highest-scoring channels."""
    return {int(i) for i in np.argsort(scores, kind="stable")[: len(scores) - keep]}


def repair(
    pg: PrunableGraph,
    plan: PruningPlan,
    scores: dict[str, np.ndarray],
    cost: Cost,
    target: float,
    *,
    max_ratio: float = 0.9,
    round_to: int = 1,
    estimate: Cost | None = None,
    max_evals: int = 12,
) -> tuple[PruningPlan, dict[str, float | int]]:
    """The plan nearest to `plan` whose `cost` is <= `target`: while over, the kept channels of least
    score per saved cost go; then every removed channel that still fits comes back, most score per cost
    first. Scored groups keep a multiple of `round_to` channels (or all of them) and at least a
    (1 - max_ratio) share; blocks in `plan` stay removed. `estimate` orders the moves when `cost` is not
    a `FlopsCost` (default: the plan's exact FLOPs); `max_evals` bounds the calls of such a `cost`.
    Returns the plan and what was done (cost before / after, channels moved, cost evaluations)."""
    blocks = list(plan.blocks)
    start: Removal = {gid: set(idx) for gid, idx in plan.channels.items()}
    floors = {gid: min_kept(len(s), max_ratio, round_to) for gid, s in scores.items()}
    exact = isinstance(cost, FlopsCost)
    guess: Cost = cost if exact else (estimate or FlopsCost(FlopsModel(pg)))
    measured: dict[tuple[tuple[str, tuple[int, ...]], ...], float] = {}

    def as_plan(removed: Mapping[str, set[int]]) -> PruningPlan:
        return _plan(pg, removed, blocks)

    def measure(removed: Mapping[str, set[int]]) -> float:
        key = tuple(sorted((gid, tuple(sorted(idx))) for gid, idx in removed.items() if idx))
        if key not in measured:
            measured[key] = cost(as_plan(removed))
        return measured[key]

    def knapsack(budget: float) -> Removal | None:
        return fill(
            start,
            scores,
            lambda removed: guess(as_plan(removed)),
            budget,
            floors=floors,
            round_to=round_to,
        )

    before = measure(start)
    if exact:
        chosen = knapsack(target)
    else:
        deepest = {**start, **{gid: _lowest(s, floors[gid]) for gid, s in scores.items()}}
        whole = {gid: idx for gid, idx in start.items() if gid not in scores}
        bounds = (guess(as_plan(deepest)), guess(as_plan(start)) * target / before, guess(as_plan(whole)))
        chosen = _bisect(knapsack, measure, target, bounds, lambda: len(measured), max_evals)
    if chosen is None:
        deepest = {**start, **{gid: _lowest(s, floors[gid]) for gid, s in scores.items()}}
        raise BudgetError(
            f"cost target {target:.6g} is out of reach: removing {max_ratio:.0%} of every group leaves "
            f"{cost(as_plan(deepest)):.6g}"
        )
    after = measure(chosen)
    result = as_plan(chosen)
    result.meta.update(plan.meta)
    gone = sum(len(chosen.get(gid, set()) - start.get(gid, set())) for gid in scores)
    back = sum(len(start.get(gid, set()) - chosen.get(gid, set())) for gid in scores)
    return result, {
        "cost_before_repair": before,
        "cost_after_repair": after,
        "repair_moves": gone - back,
        "repair_removed": gone,
        "repair_restored": back,
        "repair_cost_evaluations": len(measured),
    }


def _bisect(
    knapsack: Callable[[float], Removal | None],
    measure: Callable[[Removal], float],
    target: float,
    bounds: tuple[float, float, float],
    evals: Callable[[], int],
    max_evals: int,
) -> Removal | None:
    """The knapsack plan of the largest estimate budget whose measured cost is within `target`.
    `bounds`: the estimate of the deepest plan, a first guess, the estimate of the whole model. Bisection
    between a feasible and an infeasible budget until `evals()` (distinct measurements) reaches
    `max_evals`. None when even the deepest plan measures over the target."""

    def fits(b: float) -> Removal | None:
        removal = knapsack(b)
        return removal if removal is not None and measure(removal) <= target else None

    deepest, first, whole = bounds
    first = min(max(first, deepest), whole)
    found = fits(first)
    if found is not None:
        if (top := fits(whole)) is not None:
            return top
        lo, hi, best = first, whole, found
    else:
        if (floor := fits(deepest)) is None:
            return None
        lo, hi, best = deepest, first, floor
    for _ in range(64):  # the budget's resolution is exhausted long before
        if evals() >= max_evals or hi - lo <= 1e-9 * max(abs(hi), 1.0):
            break
        mid = (lo + hi) / 2
        if (found := fits(mid)) is not None:
            lo, best = mid, found
        else:
            hi = mid
    return best
