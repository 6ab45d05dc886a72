"""The layout rule's shortcut for dim permutations gives exactly what running the op on channel positions
(the probe) gives, for any permutation and any set of channel dims."""

from __future__ import annotations

import pytest
import torch
import torch.fx as fx
from hypothesis import given, settings
from hypothesis import strategies as st

from graphprune.analysis.depgraph import DependencyGraph
from graphprune.analysis.rules import layout as layout_rule
from graphprune.trace import META_KEY, TensorSpec


def _one_op_graph(
    shape: tuple[int, ...], call: str, args: tuple, kwargs: dict
) -> tuple[fx.GraphModule, fx.Node]:
    graph = fx.Graph()
    x = graph.placeholder("x")
    x.meta[META_KEY] = TensorSpec(shape, torch.float32)
    if call.startswith("torch."):
        node = graph.call_function(getattr(torch, call[6:]), (x, *args), kwargs)
    else:
        node = graph.call_method(call, (x, *args), kwargs)
    node.meta[META_KEY] = TensorSpec(
        tuple(getattr(torch.empty(shape), call.removeprefix("torch."))(*args, **kwargs).shape), torch.float32
    )
    graph.output(node)
    return fx.GraphModule(torch.nn.Module(), graph), node


def _edges(shape, cdims, call, args, kwargs, shortcut: bool):
    gm, node = _one_op_graph(shape, call, args, kwargs)
    dg = DependencyGraph(gm)
    x = next(iter(gm.graph.nodes))
    dg.node_tensors[x.name] = dg.add_tensor("x", shape, cdims)
    with pytest.MonkeyPatch.context() as m:
        if not shortcut:
            m.setattr(layout_rule, "dim_permutation", lambda *a: None)
        layout_rule.layout(dg, node)
    out = dg.info(node)
    maps = [d["index_map"].tolist() for _, _, d in dg.g.edges(data=True) if d.get("role") == "channels"]
    return (out.cdims if out else None), maps


@st.composite
def permutes(draw: st.DrawFn) -> tuple:
    nd = draw(st.integers(2, 5))
    shape = tuple(draw(st.lists(st.integers(1, 4), min_size=nd, max_size=nd)))
    cdims = tuple(sorted(draw(st.sets(st.integers(0, nd - 1), min_size=1))))
    if draw(st.booleans()):
        perm = draw(st.permutations(range(nd)))
        perm = [p - nd if draw(st.booleans()) else p for p in perm]  # negative dims too
        call = draw(st.sampled_from(["permute", "torch.permute"]))
        args, kwargs = (
            ((tuple(perm),), {}) if call == "torch.permute" or draw(st.booleans()) else (tuple(perm), {})
        )
    else:
        d0, d1 = draw(st.integers(-nd, nd - 1)), draw(st.integers(-nd, nd - 1))
        call = draw(st.sampled_from(["transpose", "torch.transpose"]))
        args, kwargs = (d0, d1), {}
    return shape, cdims, call, args, kwargs


@settings(max_examples=150, deadline=None)
@given(permutes())
def test_the_permute_shortcut_gives_what_the_probe_gives(case: tuple) -> None:
    shape, cdims, call, args, kwargs = case
    assert _edges(shape, cdims, call, args, kwargs, True) == _edges(shape, cdims, call, args, kwargs, False)


def test_dim_permutation_reads_permute_and_transpose_arguments() -> None:
    perm = layout_rule.dim_permutation("permute", ((0, 2, 3, 1),), {}, 4)
    assert perm == [0, 2, 3, 1]
    assert layout_rule.dim_permutation("transpose", (1, -1), {}, 4) == [0, 3, 2, 1]
    assert layout_rule.dim_permutation("permute", (0, 1), {}, 4) is None  # not a permutation of 4 dims
    assert layout_rule.dim_permutation("view", (0, 1), {}, 2) is None
