"""The Efficiency Module: what a candidate pruned network costs, exactly (FLOPs) or predicted (latency).

`FlopsModel` counts a plan's MACs without rewriting; `DifferentiableFlops` is the same count as a torch
function of keep values, for gradient-based methods; `LatencyPredictor` predicts onnxruntime latency
from the same keep values, fitted to measured sub-networks; `budget_loss` penalises a cost over budget.
"""

from graphprune.efficiency.diff_flops import DifferentiableFlops
from graphprune.efficiency.flops import FlopsModel
from graphprune.efficiency.latency import (
    LatencyModelError,
    LatencyPredictor,
    LatencySample,
    build_latency_model,
    collect_samples,
)
from graphprune.efficiency.loss import budget_loss

__all__ = [
    "DifferentiableFlops",
    "FlopsModel",
    "LatencyModelError",
    "LatencyPredictor",
    "LatencySample",
    "budget_loss",
    "build_latency_model",
    "collect_samples",
]
