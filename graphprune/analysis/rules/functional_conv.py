"""F.conv1d / conv2d / conv3d called as functions, on a weight the graph reads as a tensor.

A depthwise conv with one filter per channel (`groups` = channels = filters, timm's BlurPool2d) keeps
channel c at c: its weight and bias are PARAM sites along dim 0 and its literal `groups` a GROUP_COUNT
site. Any other functional conv mixes channels through a weight with no module behind it (or a computed
one, as in weight-standardised and conditional convs): its channels are pinned, with that reason.
"""

from __future__ import annotations

import torch.fx as fx

from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.rules.base import add_site, arg, new_tensor, op_name, unknown
from graphprune.analysis.sites import Site, SiteKind

GROUPS_ARG = 6  # conv{1,2,3}d(input, weight, bias, stride, padding, dilation, groups)


def _param(dg: DependencyGraph, a: object, rows: int) -> str | None:
    """The get_attr target of operand `a` when it is a stored tensor with `rows` slices on dim 0."""
    if not (isinstance(a, fx.Node) and a.op == "get_attr"):
        return None
    spec = dg.spec(a)
    shape = tuple(getattr(spec, "shape", ()))
    return str(a.target) if shape and shape[0] == rows else None


def functional_conv(dg: DependencyGraph, node: fx.Node) -> None:
    xi = dg.info(node.args[0])
    w, b = arg(node, 1, "weight"), arg(node, 2, "bias")
    groups_literal = arg(node, GROUPS_ARG, "groups", 1)
    wshape = tuple(getattr(dg.spec(w), "shape", ()))
    what = op_name(node, dg)
    channels = xi.size if xi is not None and xi.cdims == (1,) else 0
    depthwise = (
        channels > 0
        and isinstance(groups_literal, int)
        and groups_literal == channels
        and len(wshape) >= 3
        and wshape[:2] == (channels, 1)
    )
    wt = _param(dg, w, channels)
    bt = _param(dg, b, channels) if b is not None else None
    if not depthwise or wt is None or (b is not None and bt is None):
        unknown(
            dg,
            node,
            f"{what} is called as a function on a weight with no conv module behind it "
            "(only a depthwise one with a stored weight has a channel rule)",
        )
        return
    assert xi is not None
    out = new_tensor(dg, node, (1,))
    dg.identity(xi.key, out.key, node.name)
    for target in (wt, bt):
        if target is not None:
            add_site(dg, node, Site(f"{target}:param", SiteKind.PARAM, out.key, node.name, target, 0))
            dg.param_readers.setdefault(target, set()).add(node.name)
    info = (channels, 1, GROUPS_ARG)
    add_site(dg, node, Site(f"{node.name}:group_count", SiteKind.GROUP_COUNT, out.key, node.name, info=info))
