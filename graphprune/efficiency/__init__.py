"""The Efficiency Module: what a candidate pruned network costs, exactly (FLOPs) or predicted (latency).

`FlopsModel` counts a plan's MACs without rewriting; `DifferentiableFlops` is the same count as a torch
function of keep values, for gradient-based methods.
"""

from graphprune.efficiency.diff_flops import DifferentiableFlops
from graphprune.efficiency.flops import FlopsModel

__all__ = ["DifferentiableFlops", "FlopsModel"]
