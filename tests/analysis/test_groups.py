"""Channel coupling, one case at a time: which channels go together, and what is pinned and why."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from support.archs import (
    ChannelShuffle,
    Concat,
    DepthwiseSeparable,
    Grouped,
    GroupNormBlock,
    LayerScale,
    PadResidual,
    Residual,
    SliceHead,
    SplitMerge,
    SqueezeExcite,
    ToyNet,
    cbr,
)
from torch import nn

import graphprune as gp
from graphprune.analysis.sites import SiteKind

X = torch.randn(2, 3, 16, 16)


def toy(*blocks: nn.Module, width: int, stem: int = 8, head: str = "pool") -> gp.PrunableGraph:
    return gp.trace(ToyNet(stem, list(blocks), width, head), X)


def test_residual_add_couples_stem_and_branch_outputs() -> None:
    pg = toy(Residual(8), Residual(8), width=8)
    g = pg.group_of("stem.1")
    keys = {m.site.key for m in g.members}
    assert {"stem.0:out", "blocks.0.body.1:out", "blocks.1.body.1:out", "fc:in"} <= keys
    assert g.size == 8 and g.prunable
    assert pg.group_of("blocks.0.body.1") is g  # indices are channel indices of every fully-covered output


def test_concat_maps_offsets() -> None:
    pg = toy(Concat(8, 4, 6), width=18)
    a = pg.group_of("blocks.0.a.0")
    b = pg.group_of("blocks.0.b.0")
    stem = pg.group_of("stem.0")
    fc_in = {g.id: g.member("fc:in") for g in (a, stem, b)}
    assert fc_in[a.id].positions == tuple((i,) for i in range(4))
    assert fc_in[stem.id].positions == tuple((4 + i,) for i in range(8))
    assert fc_in[b.id].positions == tuple((12 + i,) for i in range(6))


def test_split_then_cat_keeps_offsets_and_records_sizes() -> None:
    pg = toy(SplitMerge(8), width=8)
    first, second = pg.groups_of("stem.0")  # the halves reach different layers: two groups
    split = next(m for m in first.members if m.kind == SiteKind.SPLIT)
    assert split.site.info == (4, 4)
    assert first.member("fc:in").positions == tuple((i,) for i in range(4))
    assert second.member("blocks.0.f.0:in") is not None and second.member("fc:in") is None
    assert pg.group_of("blocks.0.f.0").member("fc:in").positions == tuple((4 + i,) for i in range(4))


def test_depthwise_couples_input_and_output() -> None:
    pg = toy(DepthwiseSeparable(8, 8), width=8)
    g = pg.group_of("stem.0")
    assert g.member("blocks.0.dw.0:out") is not None and g.member("blocks.0.dw.0:in") is not None


def test_depthwise_multiplier_maps_one_input_to_several_outputs() -> None:
    pg = toy(DepthwiseSeparable(8, 8, mult=2), width=8)
    g = pg.group_of("stem.0")
    assert g.member("blocks.0.dw.0:out").positions[3] == (6, 7)


def test_grouped_conv_ties_the_same_local_channel_of_every_group() -> None:
    pg = toy(Grouped(8, 8, 4), width=8)
    g = pg.group_of("stem.0")
    assert g.size == 2  # 8 channels in 4 groups: local index 0 or 1
    assert g.member("blocks.0.f.0:in").positions == ((0, 2, 4, 6), (1, 3, 5, 7))
    out = pg.group_of("blocks.0.f.0")
    assert out.size == 2


def test_flatten_into_linear_maps_a_channel_to_its_features() -> None:
    pg = toy(Residual(8), width=8, head="flatten")
    g = pg.group_of("stem.0")
    assert g.member("fc:in").positions[1] == tuple(range(16, 32))


def test_pad_shortcut_creates_a_group_for_the_zero_channels() -> None:
    pg = toy(PadResidual(8, 16), width=16)
    stem = pg.group_of("stem.0")
    body = stem.member("blocks.0.body.1:out")
    assert body.positions == tuple((4 + i,) for i in range(8))
    zeros = next(g for g in pg.groups if any(m.kind == SiteKind.PAD for m in g.members))
    assert zeros.size == 8 and zeros.prunable
    with pytest.raises(gp.PlanError, match="spans 2 groups"):
        pg.group_of("blocks.0.body.1")


def test_squeeze_excite_multiply_couples_the_scale_with_the_features() -> None:
    pg = toy(SqueezeExcite(8), width=8)
    g = pg.group_of("stem.0")
    assert g.member("blocks.0.fc2:out") is not None and g.member("blocks.0.fc1:in") is not None


def test_group_norm_removes_whole_norm_groups() -> None:
    pg = toy(GroupNormBlock(8, 8, 2), width=8)
    g = pg.group_of("blocks.0.conv")
    assert g.size == 2 and g.member("blocks.0.gn:norm").positions == ((0, 1, 2, 3), (4, 5, 6, 7))


def test_channel_shuffle_ties_across_the_constant_dim() -> None:
    pg = toy(Residual(8), ChannelShuffle(2), width=8)
    g = pg.group_of("stem.0")
    assert g.size == 4 and g.prunable


def test_channel_slice_records_bounds() -> None:
    pg = toy(SliceHead(8, 1, 7, 8), width=8)
    inside, outside = sorted(pg.groups_of("stem.0"), key=lambda g: -g.size)
    assert (inside.size, outside.size) == (6, 2)  # channels 0 and 7 are read by no one after the slice
    sl = next(m for m in inside.members if m.kind == SiteKind.SLICE)
    assert sl.site.info[1:] == (1, 7)


def test_layer_scale_parameter_is_sliced_with_its_channels() -> None:
    pg = toy(LayerScale(8), width=8)
    g = pg.group_of("stem.0")
    assert g.member("blocks.0.gamma:param") is not None


class LayerNorm2d(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.ln = nn.LayerNorm(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def test_layer_norm_over_channels_is_pinned_with_its_reason() -> None:
    pg = toy(cbr(8, 8), LayerNorm2d(8), width=8)
    g = pg.group_of("blocks.0.0")
    assert not g.prunable and "LayerNorm" in g.reason and "statistics" in g.reason


class Mystery(nn.Module):
    """A leaf module graphprune knows nothing about."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flip(1)


def test_unknown_leaf_module_pins_its_channels_and_says_why() -> None:
    model = ToyNet(8, [cbr(8, 8), Mystery(), cbr(8, 8)], 8)
    pg = gp.trace(model, X, leaf_modules=["blocks.1"])
    before = pg.group_of("blocks.0.0")
    assert not before.prunable and "Mystery 'blocks.1'" in before.reason
    assert pg.group_of("blocks.2.0").prunable  # channels made after the unknown op are still free


class Cumsum(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cumsum(x, dim=1)


def test_unknown_function_is_never_treated_as_elementwise() -> None:
    pg = toy(cbr(8, 8), Cumsum(), cbr(8, 8), width=8)
    g = pg.group_of("blocks.0.0")
    assert not g.prunable and "cumsum" in g.reason


class ChannelMean(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x.mean(1, keepdim=True)


def test_reduction_over_channels_pins() -> None:
    pg = toy(cbr(8, 8), ChannelMean(), width=8)
    assert not pg.group_of("blocks.0.0").prunable


def test_input_and_output_channels_are_pinned() -> None:
    pg = toy(Residual(8), width=8)
    reasons = {g.reason.split(" (")[0] for g in pg.groups if not g.prunable}
    assert reasons == {"model input", "model output"}


def test_torchvision_stochastic_depth_is_a_known_leaf() -> None:
    from graphprune.torchvision_compat import import_torchvision

    tv = import_torchvision()

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.f = cbr(8, 8)
            self.sd = tv.ops.StochasticDepth(0.2, "row")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.sd(self.f(x))

    pg = toy(Block(), width=8)
    assert any(n.op == "call_module" and n.target == "blocks.0.sd" for n in pg.gm.graph.nodes)
    assert pg.group_of("stem.0").prunable
    assert [b.name for b in pg.blocks] == ["blocks.0"]


def test_depgraph_is_networkx_with_index_maps_on_edges() -> None:
    pg = toy(Concat(8, 4, 6), width=18)
    g = pg.depgraph.g
    edges = [d for _, dst, d in g.edges(data=True) if d.get("role") == "channels" and dst == "cat"]
    assert sorted(int((d["index_map"] >= 0).sum()) for d in edges) == [4, 6, 8]


def test_relu_functional_and_view_into_linear() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 6, 3)
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = F.adaptive_avg_pool2d(F.relu(self.conv(x)), 1)
            return self.fc(x.view(x.size(0), -1))

    pg = gp.trace(Net(), X)
    assert pg.group_of("conv").prunable and pg.group_of("conv").member("fc:in") is not None


def test_view_with_the_channel_count_as_a_literal_is_rewritten() -> None:
    class Net(nn.Module):
        def __init__(self, split: bool) -> None:
            super().__init__()
            self.split = split
            self.conv = nn.Conv2d(3, 6, 3)
            self.fc = nn.Linear(6, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.adaptive_avg_pool2d(self.conv(x), 1)
            return self.fc(h.view(2, 3, 2).flatten(1) if self.split else h.view(2, 6))

    pg = gp.trace(Net(False), X)
    slim = gp.apply(pg, gp.PruningPlan().remove_channels("conv", [1, 4]))
    assert slim(X).shape == (2, 2)
    g = gp.trace(Net(True), X).group_of("conv")  # 3 and 2 are not the count: pinned
    assert not g.prunable and g.reason is not None and "constant" in g.reason


class Swish(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(x)


def test_registered_channelwise_leaf_module_keeps_channels_prunable(monkeypatch: pytest.MonkeyPatch) -> None:
    from graphprune.analysis.rules import registry

    # The registry is process-wide: register into a list of this test's own, restored afterwards.
    monkeypatch.setattr(registry, "_EXTRA_IDENTITY_MODULES", [])
    model = ToyNet(8, [cbr(8, 8), Swish(), cbr(8, 8)], 8)
    assert not gp.trace(model, X, leaf_modules=[Swish]).group_of("blocks.0.0").prunable
    gp.register_channelwise_module(Swish)
    assert registry._EXTRA_IDENTITY_MODULES == [Swish]
    assert gp.trace(model, X, leaf_modules=[Swish]).group_of("blocks.0.0").prunable


def test_a_residual_stream_has_several_writers_and_a_depthwise_conv_is_not_one() -> None:
    class Inverted(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 1)
            self.expand = nn.Conv2d(8, 16, 1)
            self.dw = nn.Conv2d(16, 16, 3, padding=1, groups=16)
            self.project = nn.Conv2d(16, 8, 1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            s = self.stem(x)
            return s + self.project(F.relu(self.dw(F.relu(self.expand(s)))))

    pg = gp.trace(Inverted().eval(), torch.randn(1, 3, 8, 8))
    (stream,) = [g for g in pg.groups if g.is_residual_stream]
    assert {"stem", "project"} <= set(stream.modules)
    expand_group = next(
        g for g in pg.groups if any(m.target == "expand" and m.kind == SiteKind.CONV_OUT for m in g.members)
    )
    assert any(m.target == "dw" and m.kind == SiteKind.CONV_OUT for m in expand_group.members)
    assert not expand_group.is_residual_stream  # expand and dw write it, but dw reads it too
