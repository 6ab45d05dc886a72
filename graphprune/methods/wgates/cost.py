"""W-Gates' Efficiency Module: the budget in one unit (FLOPs or measured latency), differentiable for
training and exact (or measured) for the repair after read-off."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

from graphprune.efficiency import DifferentiableFlops, FlopsModel
from graphprune.graph import PrunableGraph
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
