"""ABP gate regulariser: pushes every mark toward 0 or 1, and the gated network toward the budget."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from graphprune.passes.block_gates import gates_of


@dataclass(frozen=True)
class GateRegulariser:
    """`weight * (polar * mean m(1-m) + relu(kept - keep_target))`, an `extra_loss` for `fit`.

    `kept` is the FLOPs-weighted mean mark over the blocks (`block_weights`: block name -> share of the
    blocks' FLOPs, summing to 1); `keep_target` is the share of block FLOPs the budget keeps. The hinge
    only pushes down while the soft network is over budget; m(1-m) is largest at 0.5, so it makes the
    marks decisive and the vote stable.
    """

    block_weights: Mapping[str, float]
    keep_target: float
    weight: float = 1.0
    polar: float = 0.5

    def terms(self, model: nn.Module) -> dict[str, torch.Tensor]:
        """The two terms (unweighted) from the marks the gates stashed in the last forward."""
        polar: list[torch.Tensor] = []
        kept: list[torch.Tensor] = []
        for name, gate in gates_of(model).items():
            if gate.mark is None:
                continue
            m = gate.mark
            polar.append((m * (1 - m)).mean())
            kept.append(self.block_weights.get(name, 0.0) * m.mean())
        if not polar:
            zero = torch.zeros(())
            return {"polar": zero, "budget": zero}
        soft_kept = torch.stack(kept).sum()
        return {
            "polar": torch.stack(polar).mean(),
            "budget": torch.relu(soft_kept - self.keep_target),
        }

    def __call__(self, model: nn.Module, x: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        t = self.terms(model)
        return self.weight * (self.polar * t["polar"] + t["budget"])
