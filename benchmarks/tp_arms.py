"""Torch-Pruning arms, set up as its README and examples do, pruned to a FLOPs cap by searching its ratio.

The peer gets the same model, the same `example_inputs` and the same FLOPs counter (`gp.count_flops`) as
graphprune; its classifier is ignored. Importances (torch-pruning 1.6.1, each once):
- `groupnorm`: `GroupMagnitudeImportance(p=2)`, the README's default (`MagnitudeImportance` is the same
  class, so it is not run again);
- `bnscale`: `BNScaleImportance`, |gamma| of the BatchNorms (Network Slimming's criterion);
- `taylor`: `TaylorImportance`, |weight x gradient|, with gradients of the cross-entropy on calibration
  batches of the training split, as the README's Taylor example does;
- DepGraph (`sparse=True`): `GroupNormPruner` (group L2) after sparse training with its regulariser
  (`pruner.regularize(model)` after every backward pass), the paper's headline method.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import torch_pruning as tp
from torch import nn

import graphprune as gp

IMPORTANCES: dict[str, Callable[[], Any]] = {
    "groupnorm": lambda: tp.importance.GroupMagnitudeImportance(p=2),
    "bnscale": lambda: tp.importance.BNScaleImportance(),
    "taylor": lambda: tp.importance.TaylorImportance(),
    "l1": lambda: tp.importance.GroupMagnitudeImportance(p=1),
}
NEEDS_GRADIENTS = {"taylor"}
DEPGRAPH_REG = 5e-4
"""The sparse-training coefficient of Torch-Pruning's CIFAR recipe (`--reg 5e-4`, method group_sl)."""

Batches = Sequence[tuple[torch.Tensor, torch.Tensor]]


@dataclass(frozen=True)
class TPResult:
    """A Torch-Pruning pruned copy and how close its FLOPs came to the cap."""

    model: nn.Module
    pruning_ratio: float
    flops_ratio: float
    matched: bool
    """True when the search found a model within [cap - tolerance, cap]."""
    reachable: bool
    """False when even the largest ratio keeps more than the cap: the tool cannot reach it."""
    trials: int
    ignored: tuple[str, ...]
    """Modules kept whole besides the classifier (the residual stream, where Torch-Pruning breaks it)."""


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


def _pruner_kwargs(
    net: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    importance: str,
    global_pruning: bool,
    pruning_ratio: float,
    round_to: int,
    ignored: tuple[str, ...],
    max_pruning_ratio: float,
) -> dict[str, Any]:
    return {
        "model": net,
        "example_inputs": example_inputs[0] if len(example_inputs) == 1 else example_inputs,
        "importance": IMPORTANCES[importance](),
        "global_pruning": global_pruning,
        "pruning_ratio": pruning_ratio,
        "max_pruning_ratio": max_pruning_ratio,
        "ignored_layers": classifier_layers(net, example_inputs) + [net.get_submodule(n) for n in ignored],
        "round_to": round_to if round_to > 1 else None,
    }


def cross_entropy_gradients(model: nn.Module, batches: Batches) -> dict[str, torch.Tensor]:
    """Cross-entropy gradients of a copy of `model` (eval mode) summed over `batches`, by parameter name:
    what TaylorImportance reads from `.grad`, computed once for every trial of a ratio search."""
    net = copy.deepcopy(model).eval()
    for x, y in batches:
        F.cross_entropy(net(x), y).backward()
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def tp_prune(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    importance: str,
    pruning_ratio: float,
    global_pruning: bool,
    round_to: int = 1,
    max_pruning_ratio: float = 0.95,
    ignored: tuple[str, ...] = (),
    gradients: dict[str, torch.Tensor] | None = None,
    group_norm_pruner: bool = False,
) -> nn.Module:
    """A pruned deep copy of `model` after one pruner `step()` at `pruning_ratio`.

    `gradients` (by parameter name) are what TaylorImportance needs; `group_norm_pruner` uses DepGraph's
    `GroupNormPruner` (its step prunes as the base pruner does; its regulariser acts in sparse training).
    Raises BrokenModelError when the pruned copy no longer runs on `example_inputs`.
    """
    net = copy.deepcopy(model).eval()
    kwargs = _pruner_kwargs(
        net, example_inputs, importance, global_pruning, pruning_ratio, round_to, ignored, max_pruning_ratio
    )
    pruner_cls = tp.pruner.GroupNormPruner if group_norm_pruner else tp.pruner.BasePruner
    pruner = pruner_cls(**kwargs)
    if importance in NEEDS_GRADIENTS:
        if gradients is None:
            raise ValueError(f"importance {importance!r} needs gradients (cross_entropy_gradients)")
        for name, p in net.named_parameters():
            p.grad = gradients[name].clone() if name in gradients else None
    pruner.step()
    net.zero_grad(set_to_none=True)
    try:
        with torch.no_grad():
            net(*example_inputs)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BrokenModelError(f"Torch-Pruning's pruned model fails to run: {first}") from None
    return net


GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""The ratios tried first: the FLOPs Torch-Pruning keeps are not monotonic in its ratio (with rounding
and per-layer caps a larger ratio can keep more), so a bisection alone stalls."""


def tp_prune_to_flops(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    target_flops: float,
    *,
    importance: str = "groupnorm",
    global_pruning: bool = False,
    round_to: int = 1,
    tolerance: float = 0.01,
    refine_trials: int = 8,
    max_ratio: float = 0.95,
    ignored: tuple[str, ...] = (),
    calibration: Batches = (),
    group_norm_pruner: bool = False,
) -> TPResult:
    """The pruned copy keeping the most FLOPs at or under `target_flops + tolerance` (ratios of the
    original's) that Torch-Pruning's ratio can give: a grid of ratios, then a bisection between the best
    one and the largest smaller ratio that keeps too much.

    When no ratio reaches the cap, the copy keeping the fewest FLOPs is returned with `reachable` False
    (the caller records it, never compares it).
    """
    base = gp.count_flops(model, example_inputs)
    cap = target_flops + tolerance
    gradients = cross_entropy_gradients(model, calibration) if importance in NEEDS_GRADIENTS else None
    tried: dict[float, float] = {}
    best: tuple[float, float, nn.Module] | None = None
    fewest: tuple[float, float, nn.Module] | None = None

    def trial(ratio: float) -> None:
        nonlocal best, fewest
        net = tp_prune(
            model, example_inputs, importance=importance, pruning_ratio=ratio, global_pruning=global_pruning,
            round_to=round_to, ignored=ignored, gradients=gradients, group_norm_pruner=group_norm_pruner,
            max_pruning_ratio=max_ratio,
        )  # fmt: skip
        kept = gp.count_flops(net, example_inputs) / base
        tried[ratio] = kept
        if kept <= cap and (best is None or kept > best[1]):
            best = (ratio, kept, net)
        if fewest is None or kept < fewest[1]:
            fewest = (ratio, kept, net)

    for ratio in (*[r for r in GRID if r < max_ratio], max_ratio):
        trial(ratio)
    if best is None:
        assert fewest is not None
        ratio, kept, net = fewest
        return TPResult(net, ratio, kept, False, False, len(tried), tuple(ignored))
    over = [r for r, k in tried.items() if r < best[0] and k > cap]
    lo, hi = (max(over) if over else 0.0), best[0]
    for _ in range(refine_trials):
        if best[1] >= target_flops - tolerance:
            break
        mid = (lo + hi) / 2
        trial(mid)
        lo, hi = (mid, hi) if tried[mid] > cap else (lo, mid)
    ratio, kept, net = best
    return TPResult(net, ratio, kept, kept >= target_flops - tolerance, True, len(tried), tuple(ignored))


def depgraph_regulariser(
    model: nn.Module,
    example_inputs: tuple[torch.Tensor, ...],
    *,
    global_pruning: bool = True,
    ignored: tuple[str, ...] = (),
    reg: float = DEPGRAPH_REG,
) -> Callable[[nn.Module], None]:
    """DepGraph's sparse-training step for `model` (trained in place): a callable to run after every
    backward pass, which adds `GroupNormPruner.regularize`'s group-norm penalty to the gradients."""
    kwargs = _pruner_kwargs(model, example_inputs, "groupnorm", global_pruning, 0.5, 1, ignored, 1.0)
    pruner = tp.pruner.GroupNormPruner(reg=reg, **kwargs)
    pruner.update_regularizer()

    def regularize(net: nn.Module) -> None:
        pruner.regularize(net)

    return regularize
