"""graphprune's data-free arms for the benchmarks: channels (L1, rounded), whole blocks, and both.

Each arm returns a new module and never touches the caller's model; FLOPs are measured by the caller with
`gp.count_flops`, the same counter the Torch-Pruning arms are measured with.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

import graphprune as gp
from graphprune.efficiency import FlopsModel


def channel_arm(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], target_flops: float, round_to: int = 8
) -> nn.Module:
    """L1 criterion, global scope, kept channels rounded to `round_to`: at most `target_flops` of the MACs."""
    pg = gp.trace(model, example_inputs)
    plan = gp.criteria.plan_by_criterion(pg, "l1", target_flops, "global", round_to=round_to)
    return gp.apply(pg, plan)


def block_scores(pg: gp.PrunableGraph) -> dict[str, float]:
    """L1-style importance of each block: the mean |weight| over the convs and Linears of its branch."""
    modules = dict(pg.gm.named_modules())
    nodes = {n.name: n for n in pg.gm.graph.nodes}
    scores = {}
    for b in pg.blocks:
        means = []
        for name in b.nodes:
            node = nodes[name]
            mod = modules.get(str(node.target)) if node.op == "call_module" else None
            if isinstance(mod, (nn.modules.conv._ConvNd, nn.Linear)):
                means.append(float(mod.weight.detach().abs().mean()))
        scores[b.name] = float(np.mean(means)) if means else 0.0
    return scores


def block_plan(pg: gp.PrunableGraph, target_flops: float) -> gp.PruningPlan:
    """Remove blocks, lowest score per MAC first, until the model has at most `target_flops` of its MACs.

    Blocks move FLOPs in steps, so the result may overshoot the target, or stop short of it once every
    block is gone; the caller reports the ratio achieved.
    """
    scores = block_scores(pg)
    model = FlopsModel(pg)
    order = sorted(pg.blocks, key=lambda b: (scores[b.name] / max(b.flops, 1), -b.flops, b.name))
    plan = gp.PruningPlan.for_graph(pg)
    removed: list[str] = []
    for b in order:
        if model.flops({}, removed) <= target_flops * pg.flops:
            break
        removed.append(b.name)
        plan.remove_block(b.name)
    plan.meta.update(criterion="block-l1", target_flops=target_flops)
    return plan


def block_arm(model: nn.Module, example_inputs: tuple[torch.Tensor, ...], target_flops: float) -> nn.Module:
    """Whole residual blocks only (see `block_plan`)."""
    pg = gp.trace(model, example_inputs)
    return gp.apply(pg, block_plan(pg, target_flops))


def block_channel_arm(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    target_flops: float,
    round_to: int = 8,
    block_share: float = 0.5,
) -> nn.Module:
    """Blocks for `block_share` of the FLOPs reduction, then channels (as `channel_arm`) for the rest."""
    pg = gp.trace(model, example_inputs)
    slim = gp.apply(pg, block_plan(pg, 1.0 - (1.0 - target_flops) * block_share))
    achieved = gp.count_flops(slim, example_inputs) / pg.flops
    rest = target_flops / achieved
    if rest >= 1.0 or math.isclose(rest, 1.0):
        return slim
    return channel_arm(slim, example_inputs, rest, round_to=round_to)


def jpeg_baseline(name: str) -> nn.Module:
    """Built-in `name` (e.g. cifar_resnet20) with the shared JPEG fine-tuned weights, in eval mode."""
    from graphprune import shared
    from graphprune.models import get_model
    from graphprune.weights import load_weights

    weights = shared.weights_file(f"cifar10jpeg_{name.removeprefix('cifar_')}")
    return load_weights(get_model(name), weights).eval()
