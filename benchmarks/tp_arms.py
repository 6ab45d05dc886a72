"""Torch-Pruning arms, set up as its README recommends, pruned to a FLOPs target by searching its ratio.

The peer gets the same model, the same `example_inputs` and the same FLOPs counter (`gp.count_flops`) as
graphprune; its classifier is ignored and channel counts are rounded with `round_to`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch_pruning as tp
from torch import nn

import graphprune as gp

IMPORTANCES: dict[str, Callable[[], Any]] = {
    # L1 magnitude of the coupled weights, the peer's counterpart of graphprune's `l1` criterion
    "magnitude": lambda: tp.importance.MagnitudeImportance(p=1),
    # group L2 norm (the README's GroupNormImportance, named GroupMagnitudeImportance since 1.5)
    "groupnorm": lambda: tp.importance.GroupMagnitudeImportance(p=2),
}


@dataclass(frozen=True)
class TPResult:
    """A Torch-Pruning pruned copy and how close its FLOPs came to the target."""

    model: nn.Module
    pruning_ratio: float
    flops_ratio: float
    matched: bool
    """True when |flops_ratio - target| <= tolerance."""
    trials: int
    ignored: tuple[str, ...]
    """Modules kept whole (the classifier, plus any the caller named)."""


class BrokenModelError(RuntimeError):
    """Torch-Pruning returned a model whose forward pass fails (channels coupled wrongly)."""


def coupled_convs(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[str]:
    """Convs whose output channels are coupled with another conv's (a residual stream), per graphprune.

    Ignoring these is the documented way (`ignored_layers`) to keep Torch-Pruning off couplings it gets
    wrong, such as the zero-padded option-A shortcut of CIFAR ResNets.
    """
    from graphprune.analysis.sites import SiteKind

    pg = gp.trace(model, example_inputs)
    out = []
    for g in pg.groups:
        convs = [m.site.target for m in g.members if m.kind == SiteKind.CONV_OUT]
        if len(convs) > 1:
            out += convs
    return sorted(set(out))


def classifier_layers(model: nn.Module, example_inputs: tuple[torch.Tensor, ...]) -> list[nn.Module]:
    """The Linear layers that produce the logits (out_features == the output's last dim): left unpruned."""
    with torch.no_grad():
        out = model(*example_inputs)
    classes = out.shape[-1]
    return [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == classes]


def tp_prune(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    importance: str,
    pruning_ratio: float,
    global_pruning: bool,
    round_to: int = 8,
    max_pruning_ratio: float = 0.9,
    ignored: tuple[str, ...] = (),
) -> nn.Module:
    """A pruned deep copy of `model` after one `MagnitudePruner.step()` at `pruning_ratio`.

    Raises BrokenModelError when the pruned copy no longer runs on `example_inputs`.
    """
    net = copy.deepcopy(model).eval()
    extra = [net.get_submodule(name) for name in ignored]
    pruner = tp.pruner.MagnitudePruner(
        net,
        example_inputs[0] if len(example_inputs) == 1 else example_inputs,
        importance=IMPORTANCES[importance](),
        global_pruning=global_pruning,
        pruning_ratio=pruning_ratio,
        max_pruning_ratio=max_pruning_ratio,
        ignored_layers=classifier_layers(net, example_inputs) + extra,
        round_to=round_to,
    )
    pruner.step()
    try:
        with torch.no_grad():
            net(*example_inputs)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrokenModelError(f"Torch-Pruning's pruned model fails to run: {first}") from None
    return net


def tp_prune_to_flops(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    target_flops: float,
    *,
    importance: str = "groupnorm",
    global_pruning: bool = False,
    round_to: int = 8,
    tolerance: float = 0.01,
    max_trials: int = 10,
    ignored: tuple[str, ...] = (),
) -> TPResult:
    """Bisect `pruning_ratio` until the pruned copy keeps `target_flops` (a ratio) within `tolerance`.

    Returns the closest trial at or under the target (or the closest overall when none is under).
    """
    base = gp.count_flops(model, example_inputs)
    lo, hi = 0.0, 0.9
    best: tuple[float, float, nn.Module] | None = None
    trials = 0
    for _ in range(max_trials):
        trials += 1
        ratio = (lo + hi) / 2
        net = tp_prune(
            model,
            example_inputs,
            importance=importance,
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            round_to=round_to,
            ignored=ignored,
        )
        kept = gp.count_flops(net, example_inputs) / base
        if abs(kept - target_flops) <= tolerance:
            best = (ratio, kept, net)
            break
        under = kept <= target_flops
        if (
            best is None
            or (under and (best[1] > target_flops or kept > best[1]))
            or (not under and best[1] > target_flops and kept < best[1])
        ):
            best = (ratio, kept, net)
        lo, hi = (ratio, hi) if kept > target_flops else (lo, ratio)
    assert best is not None
    ratio, kept, net = best
    return TPResult(net, ratio, kept, abs(kept - target_flops) <= tolerance, trials, tuple(ignored))
