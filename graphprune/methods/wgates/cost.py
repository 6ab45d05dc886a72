"""W-Gates' Efficiency Module: the budget in one unit (FLOPs or measured latency), differentiable for
training and exact (or measured) for the repair after read-off; `repair_costs` says what judges and
orders the repair's moves."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import torch

from graphprune.efficiency import DifferentiableFlops, FlopsModel
from graphprune.graph import PrunableGraph
from graphprune.methods.base import MethodError
from graphprune.methods.wgates.repair import FlopsCost
from graphprune.plan import PruningPlan

Predictor = Callable[[dict[str, torch.Tensor]], torch.Tensor]


@dataclasses.dataclass
class CostModel:
    """A budget in one unit: a differentiable prediction for training, a measurement for repair."""

    unit: str  # "MACs" or "ms"
    target: float
    predict: Predictor  # gate vectors by group id -> predicted cost (torch scalar)
    measure: Callable[[PruningPlan], float]
    original: float
    # a cheap estimate of `measure` in the same unit, to order the repair's moves (None: exact FLOPs)
    estimate: Callable[[PruningPlan], float] | None = None


def flops_cost(pg: PrunableGraph, ratio: float, groups: list[str]) -> CostModel:
    """MACs: DifferentiableFlops for training, FlopsModel (== count_flops of the applied plan) for repair."""
    diff = DifferentiableFlops(pg, groups)
    return CostModel(
        "MACs", ratio * pg.flops, lambda keep: diff(keep), FlopsCost(FlopsModel(pg)), float(pg.flops)
    )


REPAIR_BY = ("flops", "predictor", "calibrated")


def repair_costs(
    cost: CostModel, readoff: PruningPlan, repair_by: str, calibration_runs: int = 3
) -> tuple[Callable[[PruningPlan], float], Callable[[PruningPlan], float] | None, tuple[float, float] | None]:
    """What judges the repair's plans, what orders its moves (None: exact FLOPs), and for "calibrated" the
    scale and the read-off's measured cost. "flops" and "predictor" judge by `cost.measure`; "calibrated"
    judges by the estimate times the median of `calibration_runs` measured / predicted ratios of the
    read-off, so that the repair is deterministic once calibrated. A cost without an estimate (FLOPs) is
    exact already: every choice is the same."""
    if repair_by not in REPAIR_BY:
        raise MethodError(f"wgates: repair_by must be one of {', '.join(REPAIR_BY)}, got {repair_by!r}")
    if cost.estimate is None or repair_by == "flops":
        return cost.measure, None, None
    if repair_by == "predictor":
        return cost.measure, cost.estimate, None
    measured = float(np.median([cost.measure(readoff) for _ in range(calibration_runs)]))
    scale = measured / max(cost.estimate(readoff), 1e-12)
    estimate = cost.estimate

    def calibrated(plan: PruningPlan) -> float:
        return scale * estimate(plan)

    return calibrated, calibrated, (scale, measured)
