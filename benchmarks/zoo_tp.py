"""Torch-Pruning on one zoo model, checked against a masked reference (the timm coverage page's TP column).

`tp_check(model, example)` prunes a deep copy with Torch-Pruning (`BasePruner`,
`GroupMagnitudeImportance(p=2)`, its README's default; `pruning_ratio=0.5`, `global_pruning=False`, the
classifier ignored as in `benchmarks/tp_arms.py`). The ratio is Torch-Pruning's channel ratio: half of
every group's channels, not half of the FLOPs. It reports whether the pruned model runs on the example,
the MACs and parameters it keeps (`tp.utils.count_ops_and_params`), and whether its output equals the
**masked reference**:

- the reference is the (unpruned) copy with, at every module whose input channels Torch-Pruning removed
  (Conv*d, ConvTranspose*d and Linear, grouped and depthwise convs included), a forward pre-hook zeroing
  those input channels (dim 1 of a conv's input, the last dim of a Linear's). A removed channel is then
  "zeroed at every consumer's input", which is what removing it everywhere computes when the rewrite is
  right. A depthwise conv's in- and out-channels go together in Torch-Pruning: its input channel is zeroed
  as well; what it still outputs there (its bias, the next BatchNorm's shift) is zeroed at the next
  consumer, which lost that channel too;
- norms (BatchNorm, LayerNorm, GroupNorm, InstanceNorm), PReLU and per-channel parameters are not
  consumers: their removed channels only have to stop reaching a consumer. LayerNorm and GroupNorm
  statistics are computed over the channels, so removing channels there changes the kept ones: the
  result says so (`tp_note`) and the output may then differ;
- which input channels were removed is read from the pruning groups as Torch-Pruning executes them
  (`pruner.step(interactive=True)`): `pruner.pruning_history()` records only each group's root
  (module name, is-out-channel, indices), not the consumers. The indices of each call are in the
  module's current numbering; composed in order, they give the original channels removed;
- tolerance: max |pruned - reference| <= `RTOL` (1e-4) x max |reference|, on the example and on a
  second random input of the same shape, both models run in float64 (float32 where a model cannot run in
  float64, said in `tp_note`): in float32, rounding alone reaches 1e-3 through the deepest nets here
  (efficientnetv2_rw_t, checked: 8e-12 in float64), while a wrong channel gives 1e-2 and more;
  `tp_rel_error` is that ratio;
- before pruning, the copy's constant-initialised parameters (timm's zero-init last BatchNorm of a
  residual branch, 1e-6 layer scales, skip-init gains, zero biases) and the BatchNorm statistics are
  replaced by seeded random values: a branch that outputs zeros would hide a wrong rewrite.

`tp_matches_masked` is None, with the reason in `tp_note`, where the reference cannot be built honestly:
the pruned output changed shape (Torch-Pruning pruned the model output), the output is not one tensor,
Torch-Pruning removed channels of a module the reference has no mask for (attention, LSTM, embedding, an
nn.Parameter that is not per-channel), or a masked module's forward never ran (its weight is used elsewhere).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

PRUNING_RATIO = 0.5
RTOL = 1e-4
SEED = 0

_CONV = nn.modules.conv._ConvNd
_PER_CHANNEL = (nn.modules.batchnorm._BatchNorm, nn.modules.instancenorm._InstanceNorm, nn.PReLU)
_STATISTICS = (nn.LayerNorm, nn.GroupNorm)


def _first_line(exc: BaseException) -> str:
    from graphprune.errors import first_line

    return first_line(exc, with_type=True)


@dataclass
class Removals:
    """What Torch-Pruning removed, in the original model's numbering.

    `inputs`: module name -> input channels removed, for the consumers the reference masks;
    `unmaskable`: why the reference cannot be built (empty when it can); `statistics`: names of the
    LayerNorm/GroupNorm layers whose channels were removed; `groups`: pruning groups executed."""

    inputs: dict[str, list[int]] = field(default_factory=dict)
    unmaskable: list[str] = field(default_factory=list)
    statistics: list[str] = field(default_factory=list)
    groups: int = 0


def vary_constants(model: nn.Module, seed: int = SEED) -> None:
    """Replace, in place, every parameter whose elements are all equal (zero-init BatchNorm gammas, layer
    scales, skip gains, zero biases) and the BatchNorm statistics by seeded random values, so that no
    branch outputs a constant that would hide a wrong rewrite."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.is_floating_point() or p.numel() == 0:
                continue
            flat = p.detach().reshape(-1)
            if p.numel() > 1 and not bool((flat == flat[0]).all()):
                continue
            if p.dim() <= 1 or p.numel() == p.shape[0]:
                p.copy_(torch.rand(p.shape, generator=g) + 0.5)
            else:
                fan_in = p.numel() // p.shape[0]
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(fan_in))
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None:
                assert m.running_var is not None
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)


def _classifier(model: nn.Module, example: torch.Tensor) -> list[nn.Module]:
    """The layers Torch-Pruning leaves whole: `tp_arms.classifier_layers` (the Linear layers giving the
    logits) and timm's `get_classifier()` (a 1x1 conv in DLA)."""
    from tp_arms import classifier_layers

    layers = classifier_layers(model, (example,))
    get = getattr(model, "get_classifier", None)
    heads = get() if callable(get) else ()
    for head in heads if isinstance(heads, tuple | list) else (heads,):
        if isinstance(head, nn.Module) and any(True for _ in head.parameters()) and head not in layers:
            layers.append(head)
    return layers


def prune_recorded(model: nn.Module, example: torch.Tensor, ratio: float = PRUNING_RATIO) -> Removals:
    """Prune `model` in place with Torch-Pruning (local, classifier ignored) and record the removals."""
    import torch_pruning as tp

    names = {m: n for n, m in model.named_modules()}
    params = {p: n for n, p in model.named_parameters()}
    pruner = tp.pruner.BasePruner(
        model,
        example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        global_pruning=False,
        pruning_ratio=ratio,
        ignored_layers=_classifier(model, example),
    )
    kept: dict[nn.Module, tuple[int, list[int]]] = {}  # consumer -> (input width, original channels kept)
    out = Removals()
    for group in pruner.step(interactive=True):
        for dep, idxs in group.items:
            _record(dep, [int(i) for i in tp._helpers.to_plain_idxs(idxs)], kept, names, params, out)
        group.prune()
    out.groups = len(pruner.pruning_history())
    for m, (width, left) in kept.items():
        out.inputs[names[m]] = sorted(set(range(width)) - set(left))
        if len(left) != _in_channels(m):
            out.unmaskable.append(f"the removals recorded at {names[m]} do not add up to its input width")
    out.statistics = sorted(set(out.statistics))
    return out


def _in_channels(m: nn.Module) -> int:
    return int(m.in_channels if isinstance(m, _CONV) else m.in_features)  # type: ignore[arg-type]


def _record(
    dep: Any,
    idxs: list[int],
    kept: dict[nn.Module, tuple[int, list[int]]],
    names: dict[nn.Module, str],
    params: dict[nn.Parameter, str],
    out: Removals,
) -> None:
    """One dependency of a group about to be pruned: compose its input-channel removal into `kept`."""
    module, handler = dep.target.module, dep.handler
    if not idxs:
        return
    if isinstance(module, _CONV | nn.Linear):
        owner, fn = getattr(handler, "__self__", None), getattr(handler, "__func__", None)
        # depthwise: Torch-Pruning's prune_in_channels is its prune_out_channels (in and out coupled)
        if owner is None or fn is None:
            out.unmaskable.append(f"an unknown pruning function on {names.get(module, '?')}")
            return
        if fn is not getattr(type(owner), "prune_in_channels", None):
            return
        width, left = kept.get(module, (_in_channels(module), list(range(_in_channels(module)))))
        gone = set(idxs)  # numbered as the module is now: earlier groups may have removed some already
        kept[module] = (width, [c for i, c in enumerate(left) if i not in gone])
    elif isinstance(module, _STATISTICS):
        out.statistics.append(f"{type(module).__name__} {names.get(module, '?')}")
    elif isinstance(module, nn.Parameter):
        dim = int(dep.target.pruning_dim)
        if any(s != 1 for d, s in enumerate(module.shape) if d != dim % max(1, module.dim())):
            name = params.get(module, "an unregistered parameter")
            out.unmaskable.append(f"removes channels of nn.Parameter {name} {tuple(module.shape)}")
    elif isinstance(module, _PER_CHANNEL) or type(module).__module__.startswith("torch_pruning"):
        return  # per-channel layers, and Torch-Pruning's own graph ops (concat, split, reshape...)
    else:
        out.unmaskable.append(f"removes channels of {type(module).__name__} {names.get(module, '?')}")


def masked_reference(
    model: nn.Module, inputs: Mapping[str, Sequence[int]]
) -> tuple[nn.Module, dict[str, int]]:
    """A deep copy of `model` whose modules named in `inputs` read zeros on those input channels (dim 1
    of a conv's input, the last dim of a Linear's), and the count of times each mask ran (filled when
    the copy runs)."""
    ref = copy.deepcopy(model)
    calls: dict[str, int] = {}
    for name, channels in inputs.items():
        if not channels:
            continue
        m = ref.get_submodule(name)
        idx = torch.tensor(sorted(channels), dtype=torch.long)
        calls[name] = 0
        m.register_forward_pre_hook(_zeroing_hook(name, idx, isinstance(m, _CONV), calls))
    return ref, calls


def _zeroing_hook(
    name: str, idx: torch.Tensor, conv: bool, calls: dict[str, int]
) -> Callable[[nn.Module, tuple[Any, ...]], tuple[Any, ...]]:
    def hook(_m: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        calls[name] += 1
        x = args[0]
        dim = 1 if conv else x.dim() - 1
        return (x.index_fill(dim, idx.to(x.device), 0.0), *args[1:])

    return hook


def compare(
    pruned: nn.Module, reference: nn.Module, inputs: Sequence[torch.Tensor]
) -> tuple[float | None, str]:
    """The largest |pruned - reference| / max |reference| over `inputs`, or None and why."""
    worst = 0.0
    with torch.no_grad():
        for x in inputs:
            a, b = pruned(x), reference(x)
            if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
                return None, "the output is not one tensor"
            if a.shape != b.shape:
                return None, f"Torch-Pruning changed the output's shape {tuple(b.shape)} -> {tuple(a.shape)}"
            if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
                return None, "non-finite outputs"
            scale = float(b.abs().max())
            err = float((a - b).abs().max())
            worst = max(worst, err / scale if scale > 0 else (0.0 if err == 0 else math.inf))
    return worst, ""


def tp_check(model: nn.Module, example: torch.Tensor, ratio: float = PRUNING_RATIO) -> dict[str, object]:
    """Torch-Pruning at `ratio` on a deep copy of `model`, checked against the masked reference.

    Keys: `tp_status` ("ok", "error: <one line>", "not installed"), `tp_runs`, `tp_matches_masked`
    (True/False/None), `tp_rel_error`, `tp_note` (why None, what failed, or a caveat), `tp_flops` and
    `tp_params` (shares kept, Torch-Pruning's counter), `tp_groups` (groups pruned), `tp_seconds`.
    Never raises for a model-specific failure."""
    start = time.perf_counter()
    result: dict[str, object] = {
        "tp_status": "ok", "tp_runs": None, "tp_matches_masked": None, "tp_rel_error": None, "tp_note": "",
        "tp_flops": None, "tp_params": None, "tp_groups": 0, "tp_seconds": 0.0,
    }  # fmt: skip
    try:
        import torch_pruning as tp
    except ImportError:
        result["tp_status"] = "not installed"
        return result
    try:
        base = copy.deepcopy(model).eval()
        vary_constants(base)
        net = copy.deepcopy(base)
        removals = prune_recorded(net, example, ratio)
        result["tp_groups"] = removals.groups
    except Exception as exc:  # noqa: BLE001 - the page lists every failure, whatever its kind
        result["tp_status"] = f"error: {_first_line(exc)}"
        result["tp_seconds"] = time.perf_counter() - start
        return result
    _finish(result, tp, base, net, removals, example)
    result["tp_seconds"] = time.perf_counter() - start
    return result


def _finish(
    result: dict[str, object], tp: Any, base: nn.Module, net: nn.Module, removals: Removals, x: torch.Tensor
) -> None:
    try:
        with torch.no_grad():
            net(x)
        result["tp_runs"] = True
    except Exception as exc:  # noqa: BLE001
        result["tp_runs"], result["tp_note"] = False, f"the pruned model fails: {_first_line(exc)}"
        return
    try:
        macs, params = tp.utils.count_ops_and_params(base, x)
        pmacs, pparams = tp.utils.count_ops_and_params(net, x)
        result["tp_flops"], result["tp_params"] = pmacs / macs, pparams / params
    except Exception:  # noqa: BLE001 - the counts are extra, never the verdict
        pass
    notes = []
    if removals.statistics:
        notes.append(f"removes channels of {len(removals.statistics)} norm(s) over channels "
                     f"(their statistics change), e.g. {removals.statistics[0]}")  # fmt: skip
    if removals.unmaskable:
        result["tp_note"] = "; ".join([f"no reference: {removals.unmaskable[0]}", *notes])
        return
    second = torch.randn(x.shape, generator=torch.Generator().manual_seed(SEED + 1)).to(x)
    try:
        ref, calls = masked_reference(base, removals.inputs)
        try:
            rel, why = compare(net.double(), ref.double(), [x.double(), second.double()])
        except Exception:  # noqa: BLE001 - a model that cannot run in float64: compare in float32
            notes.append("compared in float32 (the model does not run in float64)")
            net, ref = net.float(), ref.float()
            calls.update(dict.fromkeys(calls, 0))
            rel, why = compare(net, ref, [x, second])
    except Exception as exc:  # noqa: BLE001
        result["tp_note"] = f"no reference: {_first_line(exc)}"
        return
    silent = [n for n, c in calls.items() if c == 0]
    if rel is None or silent:
        why = why or f"the forward of {silent[0]} never ran (its weight is used elsewhere)"
        result["tp_note"] = "; ".join([f"no reference: {why}", *notes])
        return
    result["tp_rel_error"], result["tp_matches_masked"] = rel, rel <= RTOL
    result["tp_note"] = "; ".join(notes)
