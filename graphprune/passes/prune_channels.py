"""PruneChannels: remove channel positions at every site (weights, norms, pads, splits, slices)."""

from __future__ import annotations

import operator
from collections import defaultdict
from collections.abc import Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.infra.pass_base import PassResult

from graphprune.analysis.sites import SiteKind, SiteRemoval
from graphprune.errors import PlanError
from graphprune.passes.base import GraphPass
from graphprune.passes.param_surgery import index_select, owner_of, replace_tensor, slice_tensor


def _keep(n: int, removed: Sequence[int]) -> torch.Tensor:
    """The indices of range(n) not in `removed`, ascending (one index tensor for every slice of a site)."""
    kept = torch.ones(n, dtype=torch.bool)
    if len(removed):
        kept[torch.as_tensor(removed, dtype=torch.long)] = False
    return kept.nonzero().squeeze(1)


class PruneChannels(GraphPass):
    """Slice every coupled parameter and rewrite pad amounts, split sizes and slice bounds."""

    def __init__(self, removals: Sequence[SiteRemoval]) -> None:
        super().__init__()
        self.removals = [r for r in removals if r.removed]

    def call(self, gm: fx.GraphModule) -> PassResult:
        nodes = {n.name: n for n in gm.graph.nodes}
        by_module: dict[str, dict[SiteKind, tuple[int, ...]]] = defaultdict(dict)
        for r in self.removals:
            s = r.site
            if s.kind in (SiteKind.CONV_OUT, SiteKind.CONV_IN, SiteKind.LINEAR_OUT, SiteKind.LINEAR_IN):
                by_module[s.target][s.kind] = r.removed
            elif s.kind == SiteKind.LAYER_NORM:
                if s.target:
                    _prune_layer_norm(gm.get_submodule(s.target), r.removed)
                else:  # F.layer_norm: its weight and bias are PARAM sites
                    _rewrite_layer_norm_shape(nodes[s.node], len(r.removed))
            elif s.kind == SiteKind.NORM:
                _prune_norm(gm.get_submodule(s.target), r.removed)
            elif s.kind == SiteKind.PARAM:
                owner, name = owner_of(gm, s.target)
                t = getattr(owner, name)
                replace_tensor(owner, name, index_select(t, s.dim, _keep(t.shape[s.dim], r.removed)))
            elif s.kind == SiteKind.PAD:
                _rewrite_pad(nodes[s.node], s.positions or (), s.info, r.removed)
            elif s.kind == SiteKind.SPLIT:
                _rewrite_split(nodes[s.node], s.info, r.removed)
            elif s.kind == SiteKind.SLICE:
                _rewrite_slice(nodes[s.node], s.info, r.removed)
            elif s.kind == SiteKind.VIEW:
                _rewrite_view(nodes[s.node], s.info[0], len(r.removed))
            elif s.kind == SiteKind.GROUP_COUNT:
                _rewrite_group_count(nodes[s.node], s.info, len(r.removed))
        for target, kinds in by_module.items():
            m = gm.get_submodule(target)
            if isinstance(m, nn.Linear):
                _prune_linear(m, kinds.get(SiteKind.LINEAR_OUT, ()), kinds.get(SiteKind.LINEAR_IN, ()))
            else:
                _prune_conv(m, target, kinds.get(SiteKind.CONV_OUT, ()), kinds.get(SiteKind.CONV_IN, ()))
        return PassResult(gm, bool(self.removals))


def _prune_conv(m: nn.Module, name: str, out_rm: Sequence[int], in_rm: Sequence[int]) -> None:
    assert isinstance(m, nn.modules.conv._ConvNd)
    cin, cout, groups = m.in_channels, m.out_channels, m.groups
    keep_out, keep_in = _keep(cout, out_rm), _keep(cin, in_rm)
    w = m.weight
    if m.transposed:  # weight (in, out/groups, k...), groups == 1 by the analysis
        w = index_select(index_select(w, 0, keep_in), 1, keep_out)
    elif groups == 1:
        w = index_select(index_select(w, 0, keep_out), 1, keep_in)
    elif cin // groups == 1:  # depthwise: whole groups go
        groups = len(keep_in)
        if groups == 0 or len(keep_out) % groups:
            raise PlanError(f"depthwise conv '{name}': {len(keep_out)} outputs do not fit {groups} groups")
        w = index_select(w, 0, keep_out)
    else:
        cin_g, cout_g = cin // groups, cout // groups
        local = sorted({i % cin_g for i in in_rm})
        if len(in_rm) != len(local) * groups or len(out_rm) % groups:
            raise PlanError(f"grouped conv '{name}': channels must be removed equally from every group")
        w = index_select(index_select(w, 0, keep_out), 1, _keep(cin_g, local))
        assert len(keep_out) % groups == 0 and cout_g
    replace_tensor(m, "weight", w)
    if m.bias is not None:
        slice_tensor(m, "bias", 0, keep_out)
    m.in_channels, m.out_channels, m.groups = len(keep_in), len(keep_out), groups


def _prune_linear(m: nn.Linear, out_rm: Sequence[int], in_rm: Sequence[int]) -> None:
    keep_out, keep_in = _keep(m.out_features, out_rm), _keep(m.in_features, in_rm)
    replace_tensor(m, "weight", index_select(index_select(m.weight, 0, keep_out), 1, keep_in))
    if m.bias is not None:
        slice_tensor(m, "bias", 0, keep_out)
    m.in_features, m.out_features = len(keep_in), len(keep_out)


def _prune_norm(m: nn.Module, removed: Sequence[int]) -> None:
    # a norm without affine or running stats has no tensor to read the channel count from: use its own
    counts = [getattr(m, k, None) for k in ("num_channels", "num_features", "num_parameters")]
    counts += [t.shape[0] for t in (getattr(m, k, None) for k in ("weight", "running_mean")) if t is not None]
    keep = _keep(int(next(c for c in counts if c is not None)), removed)
    for name in ("weight", "bias", "running_mean", "running_var"):
        slice_tensor(m, name, 0, keep)
    if isinstance(m, nn.GroupNorm):
        per_group = m.num_channels // m.num_groups
        m.num_groups = len(keep) // per_group
        m.num_channels = len(keep)
    elif isinstance(m, nn.PReLU):
        m.num_parameters = len(keep)
    elif hasattr(m, "num_features"):
        setattr(m, "num_features", len(keep))  # noqa: B010 - BN / InstanceNorm, typed as Module here


def _prune_layer_norm(m: nn.Module, removed: Sequence[int]) -> None:
    assert isinstance(m, nn.LayerNorm) and len(m.normalized_shape) == 1
    keep = _keep(m.normalized_shape[0], removed)
    slice_tensor(m, "weight", 0, keep)
    slice_tensor(m, "bias", 0, keep)
    m.normalized_shape = (len(keep),)


def _rewrite_layer_norm_shape(node: fx.Node, n_removed: int) -> None:
    """Lower the literal `normalized_shape` of an F.layer_norm call by the channels removed."""
    raw = node.args[1] if len(node.args) > 1 else node.kwargs["normalized_shape"]
    n = raw if isinstance(raw, int) else raw[0]  # type: ignore[index]
    assert isinstance(n, int)
    if len(node.args) > 1:
        node.args = (node.args[0], (n - n_removed,), *node.args[2:])
    else:
        node.kwargs = {**node.kwargs, "normalized_shape": (n - n_removed,)}


def _rewrite_group_count(node: fx.Node, info: tuple[int, ...], n_removed: int) -> None:
    """Lower the literal group count of F.group_norm (`num_groups`) or of a depthwise functional conv
    (`groups`) by the whole groups removed. `info`: (count, channels per group, positional index)."""
    groups, per_group, index = info
    if n_removed % per_group:
        raise PlanError(f"'{node.name}': {n_removed} channels are not whole groups of {per_group}")
    new = groups - n_removed // per_group
    keyword = "num_groups" if node.target is F.group_norm else "groups"
    if len(node.args) > index:
        node.args = (*node.args[:index], new, *node.args[index + 1 :])
    else:
        node.kwargs = {**node.kwargs, keyword: new}


def _rewrite_pad(node: fx.Node, zeros: Sequence[int], info: tuple[int, ...], removed: Sequence[int]) -> None:
    k, front, _back = info
    rm = set(removed)
    new_front = sum(1 for p in zeros[:front] if p not in rm)
    new_back = sum(1 for p in zeros[front:] if p not in rm)
    raw = node.args[1] if len(node.args) > 1 else node.kwargs["pad"]
    assert isinstance(raw, (list, tuple))
    pad = list(raw)
    pad[k], pad[k + 1] = new_front, new_back
    if len(node.args) > 1:
        node.args = (node.args[0], tuple(pad), *node.args[2:])
    else:
        node.kwargs = {**node.kwargs, "pad": tuple(pad)}


def _rewrite_split(node: fx.Node, sizes: tuple[int, ...], removed: Sequence[int]) -> None:
    bounds = [0]
    for s in sizes:
        bounds.append(bounds[-1] + s)
    new_sizes = [
        sizes[i] - sum(1 for p in removed if bounds[i] <= p < bounds[i + 1]) for i in range(len(sizes))
    ]
    dim = node.args[2] if len(node.args) > 2 else node.kwargs.get("dim", 0)
    x = node.args[0]
    # chunk and split alike become split with explicit section sizes
    if node.op == "call_method":
        node.target = "split"
        node.args, node.kwargs = (x, new_sizes), {"dim": dim}
    else:
        node.target = torch.split
        node.args, node.kwargs = (x, new_sizes), {"dim": dim}


def _rewrite_slice(node: fx.Node, info: tuple[int, ...], removed: Sequence[int]) -> None:
    k, start, stop = info
    new_start = start - sum(1 for p in removed if p < start)
    new_stop = stop - sum(1 for p in removed if p < stop)
    idx = node.args[1]
    items = list(idx) if isinstance(idx, tuple) else [idx]
    items[k] = slice(new_start, new_stop, None)
    node.args = (node.args[0], tuple(items) if isinstance(idx, tuple) else items[0])
    assert node.target is operator.getitem


def _rewrite_view(node: fx.Node, k: int, n_removed: int) -> None:
    """Lower the literal size at shape position `k` of a view / reshape by the channels removed there."""
    if "shape" in node.kwargs:
        shape = list(node.kwargs["shape"])  # type: ignore[arg-type]
        shape[k] -= n_removed
        node.kwargs = {**node.kwargs, "shape": tuple(shape)}
    elif len(node.args) == 2 and isinstance(node.args[1], (list, tuple)):
        shape = list(node.args[1])
        shape[k] -= n_removed
        node.args = (node.args[0], tuple(shape))
    else:
        args = list(node.args)
        args[1 + k] -= n_removed  # type: ignore[operator]
        node.args = tuple(args)
