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

from graphprune.criteria import rounded_kept
from graphprune.efficiency import FlopsModel
from graphprune.errors import GraphpruneError
from graphprune.graph import PrunableGraph
from graphprune.methods.wgates.counts import min_kept
from graphprune.methods.wgates.knapsack import Estimator, Removal, WholeEstimate, fill
from graphprune.methods.wgates.site_flops import SiteFlops
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
    keep_at_least: Mapping[str, float] | None = None,
    from_floor: bool = False,
) -> tuple[PruningPlan, dict[str, float | int]]:
    """The plan nearest to `plan` whose `cost` is <= `target`: while over, the kept channels of least
    score per saved cost go; then every removed channel that still fits comes back, most score per cost
    first. Scored groups keep a multiple of `round_to` channels (or all of them) and at least a
    (1 - max_ratio) share; blocks in `plan` stay removed. `estimate` orders the moves when `cost` is not
    a `FlopsCost` (default: the plan's exact FLOPs); `max_evals` bounds the calls of such a `cost`.
    `keep_at_least` raises some groups' floors to a share of their channels (a stream across stages).
    `from_floor`: start the knapsack with every scored group at its floor rather than at `plan`, so that
    the whole budget is allocated by score per cost (the read-off's counts are ignored, its scores not).
    Returns the plan and what was done (cost before / after, channels moved, cost evaluations)."""
    blocks = list(plan.blocks)
    floors = {gid: min_kept(len(s), max_ratio, round_to) for gid, s in scores.items()}
    for gid, share in (keep_at_least or {}).items():
        if gid in floors:
            floors[gid] = max(floors[gid], min_kept(len(scores[gid]), 1.0 - share, round_to))
    given: Removal = {gid: set(idx) for gid, idx in plan.channels.items()}
    start = {gid: set(idx) for gid, idx in given.items()}
    if from_floor:
        start.update({gid: _lowest(s, floors[gid]) for gid, s in scores.items()})
    for gid, s in scores.items():  # a count between valid ones rises to the next (as L1 rounds)
        out = start.get(gid, set())
        valid = max(rounded_kept(len(s), len(s) - len(out), round_to), floors[gid])
        if len(s) - len(out) < valid:
            best_first = sorted(out, key=lambda i: (-s[i], i))
            start[gid] = out - set(best_first[: valid - (len(s) - len(out))])
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

    def estimator() -> Estimator:
        if isinstance(guess, FlopsCost):  # updated per move from site counts, no plan built
            return SiteFlops(guess.model, blocks)
        return WholeEstimate(lambda removed: guess(as_plan(removed)))

    def estimated(removed: Mapping[str, set[int]]) -> float:
        return estimator().commit(removed)

    def knapsack(budget: float) -> Removal | None:
        return fill(start, scores, estimator(), budget, floors=floors, round_to=round_to)

    before = measure(given)
    spent = 0  # evaluations of `cost` no longer in `measured`
    if exact:
        chosen = knapsack(target)
    else:
        deepest = {**start, **{gid: _lowest(s, floors[gid]) for gid, s in scores.items()}}
        whole = {gid: idx for gid, idx in start.items() if gid not in scores}
        bounds = (estimated(deepest), estimated(given) * target / max(before, 1e-12), estimated(whole))
        chosen = _bisect(knapsack, measure, target, bounds, lambda: len(measured), max_evals)
        if chosen is None and cost(as_plan(deepest)) <= target:
            # one noisy measurement put the deepest plan over: search once more with fresh measurements
            spent += len(measured) + 1
            measured.clear()
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
    gone = sum(len(chosen.get(gid, set()) - given.get(gid, set())) for gid in scores)
    back = sum(len(given.get(gid, set()) - chosen.get(gid, set())) for gid in scores)
    return result, {
        "cost_before_repair": before,
        "cost_after_repair": after,
        "repair_moves": gone - back,
        "repair_removed": gone,
        "repair_restored": back,
        "repair_cost_evaluations": spent + len(measured),
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
    `bounds`: the estimate of the deepest plan, a first guess, the estimate of the whole model. From the
    guess, steps of 1% of the range, doubling, until the answer is bracketed; then bisection; both stop
    when `evals()` (distinct measurements) reaches `max_evals`. None when even the deepest plan is over."""

    def fits(b: float) -> Removal | None:
        removal = knapsack(b)
        return removal if removal is not None and measure(removal) <= target else None

    deepest, first, whole = bounds
    b = min(max(first, deepest), whole)
    step = 0.01 * (whole - deepest)
    best = fits(b)
    lo, hi = (b, whole) if best is not None else (deepest, b)
    while evals() < max_evals and step < hi - lo:  # gallop from the guess toward the answer
        probe = lo + step if best is not None else hi - step
        if (found := fits(probe)) is not None:
            lo, best = probe, found
        else:
            hi = probe
            if best is not None:
                break
        step *= 2
    if best is None:  # never within: the deepest plan decides
        if (floor := fits(deepest)) is None:
            return None
        lo, best = deepest, floor
    for _ in range(64):  # the budget's resolution runs out long before
        if evals() >= max_evals or hi - lo <= 1e-9 * max(abs(hi), 1.0):
            break
        mid = (lo + hi) / 2
        if (found := fits(mid)) is not None:
            lo, best = mid, found
        else:
            hi = mid
    if hi >= whole and (top := fits(whole)) is not None:
        return top  # everything fits (measured once, even past max_evals)
    return best
