"""Rules for nn.Module leaves: conv, linear, norms, activations, flatten, softmax, padding modules."""

from __future__ import annotations

import numpy as np
import torch.fx as fx
from torch import nn

from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.rules.base import (
    add_site,
    new_tensor,
    norm_dim,
    out_spec,
    unknown,
)
from graphprune.analysis.rules.elementwise import identity
from graphprune.analysis.rules.layout import probe, tie_literal_dims
from graphprune.analysis.sites import Site, SiteKind


def conv(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    assert isinstance(m, (nn.modules.conv._ConvNd))
    xi = dg.info(node.args[0])
    out = new_tensor(dg, node, (1,))
    name = str(node.target)
    transposed = bool(m.transposed)
    groups, cin, cout = m.groups, m.in_channels, m.out_channels
    if transposed and groups != 1:
        unknown(dg, node, f"grouped ConvTranspose '{name}' has no channel rule")
        return
    add_site(dg, node, Site(f"{name}:out", SiteKind.CONV_OUT, out.key, node.name, name))
    if xi is None or not xi.size:
        return
    if xi.cdims != (1,) or xi.size != cin:
        dg.pin(xi.key, f"input of '{name}' has its channels on another dim")
        return
    add_site(dg, node, Site(f"{name}:in", SiteKind.CONV_IN, xi.key, node.name, name))
    if groups > 1:
        cin_g, cout_g = cin // groups, cout // groups
        if cin_g == 1:  # depthwise: output channel j reads input channel j // cout_g only
            dg.couple(xi.key, out.key, np.arange(cout) // cout_g, node.name)
        else:  # grouped: the same local channel is removed from every group, so `groups` stays valid
            dg.tie(xi.key, np.arange(cin).reshape(groups, cin_g).T)
            dg.tie(out.key, np.arange(cout).reshape(groups, cout_g).T)


def linear(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    assert isinstance(m, nn.Linear)
    xi = dg.info(node.args[0])
    spec = out_spec(node)
    out = new_tensor(dg, node, (len(spec.shape) - 1,))
    name = str(node.target)
    add_site(dg, node, Site(f"{name}:out", SiteKind.LINEAR_OUT, out.key, node.name, name))
    if xi is None or not xi.size:
        return
    if xi.cdims != (len(xi.shape) - 1,) or xi.size != m.in_features:
        dg.pin(xi.key, f"input of Linear '{name}' has its channels off the last dim")
        return
    add_site(dg, node, Site(f"{name}:in", SiteKind.LINEAR_IN, xi.key, node.name, name))


def norm(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    """BatchNorm / InstanceNorm / GroupNorm / PReLU: per-channel state on dim 1."""
    xi = dg.info(node.args[0])
    name = str(node.target)
    if xi is None or xi.cdims != (1,):
        unknown(dg, node, f"{type(m).__name__} '{name}' input has no channels on dim 1")
        return
    identity(dg, node)
    out = dg.info(node)
    if out is None:
        return
    if isinstance(m, nn.GroupNorm):  # statistics are per norm group: remove whole norm groups only
        dg.tie(out.key, np.arange(out.size).reshape(m.num_groups, -1))
    if isinstance(m, nn.PReLU) and m.num_parameters == 1:
        return
    add_site(dg, node, Site(f"{name}:norm", SiteKind.NORM, out.key, node.name, name))


def layer_norm(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    assert isinstance(m, nn.LayerNorm)
    xi = dg.info(node.args[0])
    identity(dg, node)
    n = len(m.normalized_shape)
    out = dg.info(node)
    if xi is not None and xi.size and any(d >= len(xi.shape) - n for d in xi.cdims):
        supported = n == 1 and xi.cdims == (len(xi.shape) - 1,) and out is not None
        if dg.prune_layernorm and supported and out is not None:
            name = str(node.target)
            add_site(dg, node, Site(f"{name}:layer_norm", SiteKind.LAYER_NORM, out.key, node.name, name))
            return
        dg.pin(
            xi.key,
            f"LayerNorm '{node.target}' normalises over the channel dim; removing a channel changes "
            "its statistics" + (" (--prune-layernorm opts in, not lossless)" if supported else ""),
        )


def module_identity(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    identity(dg, node)


def module_layout(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    xi = dg.info(node.args[0])
    if xi is None:
        new_tensor(dg, node, ())
        return
    probe(dg, node, xi, m)
    if isinstance(m, nn.Unflatten) and dg.info(node) is not None:
        literal = [False] * len(out_spec(node).shape)
        for k in range(len(m.unflattened_size)):
            literal[m.dim + k if m.dim >= 0 else len(literal) + m.dim - len(m.unflattened_size) + 1 + k] = (
                True
            )
        tie_literal_dims(dg, node, literal)


def module_softmax(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    xi = dg.info(node.args[0])
    identity(dg, node)
    d = getattr(m, "dim", None)
    if xi is not None and xi.size and (d is None or norm_dim(int(d), len(xi.shape)) in xi.cdims):
        dg.pin(xi.key, f"{type(m).__name__} '{node.target}' normalises over the channel dim")


def module_pad(dg: DependencyGraph, node: fx.Node, m: nn.Module) -> None:
    xi = dg.info(node.args[0])
    padding = tuple(getattr(m, "padding", ()))
    nd = len(xi.shape) if xi is not None else 0
    touches = xi is not None and any(
        nd - 1 - i in xi.cdims
        for i in range(len(padding) // 2)
        if (padding[2 * i], padding[2 * i + 1]) != (0, 0)
    )
    if touches:
        unknown(dg, node, f"{type(m).__name__} '{node.target}' pads the channel dim")
    else:
        identity(dg, node)
