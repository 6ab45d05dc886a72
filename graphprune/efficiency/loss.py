"""The budget loss: a penalty on a predicted cost above its target, added to the task loss.

`hinge` (the issue's form): lambda * max(0, predicted / target - 1). It is zero inside the budget, so
within the budget only the task loss moves the gates; its gradient grows with the relative excess, so
the same lambda works for FLOPs and for milliseconds. `squared` (lambda * max(0, ratio - 1)^2) is a
smoother option for noisy latency predictions.
"""

from __future__ import annotations

from typing import Literal

import torch

from graphprune.errors import GraphpruneError

LossForm = Literal["hinge", "squared"]


def budget_loss(
    predicted: torch.Tensor, target: float, weight: float = 1.0, form: LossForm = "hinge"
) -> torch.Tensor:
    """`weight` * excess of `predicted` over `target`, relative to `target`."""
    if target <= 0:
        raise GraphpruneError(f"budget target must be > 0, got {target}")
    excess = torch.relu(predicted / target - 1.0)
    if form == "squared":
        excess = excess.square()
    elif form != "hinge":
        raise GraphpruneError(f"unknown budget loss form {form!r} (choose hinge or squared)")
    return weight * excess
