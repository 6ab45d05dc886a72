"""The lossless oracle on one zoo model: several random plans with blocks, each over several inputs.

For each plan, the planned channels are zeroed at their producers, every consumer is checked to read
zeros there, and the pruned model must compute what the zeroed one does, on the example, fresh random
inputs and another batch size (`tests/support/lossless.py`, shared with the test suite).
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.lossless import check_plan_lossless, random_plan  # noqa: E402

import graphprune as gp  # noqa: E402

PLANS = 3


def check_oracle(model: nn.Module, x: torch.Tensor, plans: int = PLANS) -> dict[str, object]:
    """`oracle_plans`: plans checked and passed; `oracle_error`: the first failure, or None."""
    try:
        pg = gp.trace(model, x)
    except gp.GraphpruneError as exc:
        return {"oracle_plans": 0, "oracle_error": f"trace: {exc}"}
    for seed in range(plans):
        plan = random_plan(pg, seed, ratio=0.3, blocks=0.5)
        try:
            check_plan_lossless(pg, plan)
        except Exception as exc:  # noqa: BLE001 - report the failing plan, keep the zoo run going
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            return {"oracle_plans": seed, "oracle_error": f"plan seed {seed}: {type(exc).__name__}: {first}"}
    return {"oracle_plans": plans, "oracle_error": None}
