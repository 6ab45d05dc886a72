"""Adversarial models, one per class of analysis defect: every group the analysis calls prunable must prune
losslessly (checked with an independent oracle), or the group must be pinned."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from support.lossless import check_lossless
from torch import nn

import graphprune as gp
from graphprune.errors import ModelSpecError
from graphprune.rewrite import masked_reference
from graphprune.timm_compat import import_timm

X = torch.randn(2, 3, 8, 8)
torch.fx.wrap("len")  # record len(h) calls made in this module


class Net(nn.Module):
    """conv -> body(h) -> conv: `body` is the op under test, on the 8 channels of conv a."""

    def __init__(self, body: object, c: int = 8, **extra: nn.Module | nn.Parameter | torch.Tensor) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, c, 3, padding=1)
        self.b = nn.Conv2d(c, 4, 3, padding=1)
        self.body = body
        for k, v in extra.items():
            if isinstance(v, nn.Parameter):
                self.register_parameter(k, v)
            elif isinstance(v, torch.Tensor):
                self.register_buffer(k, v)
            else:
                self.add_module(k, v)

    def forward(self, x: torch.Tensor) -> object:
        return self.body(self, self.a(x))


def a_group(pg: gp.PrunableGraph) -> gp.ChannelGroup:
    return pg.group_of("a")


def prunable_and_lossless(model: nn.Module, x: torch.Tensor = X, zero_preserving: bool = True) -> None:
    """Group `a` is prunable; pruned models equal the masked reference on new inputs (and, when the body
    maps zero channels to zero channels, the producer-zeroing oracle agrees)."""
    pg = gp.trace(model.eval(), x)
    assert a_group(pg).prunable, a_group(pg).reason
    for seed in range(3):
        if zero_preserving:
            check_lossless(model, x, seed, ratio=0.4)
        plan = _plan(pg, seed)
        slim = gp.apply(pg, plan, verify=False)
        ref = masked_reference(pg, plan)
        x2 = torch.randn(3, *x.shape[1:], dtype=torch.float64)
        with torch.no_grad():
            torch.testing.assert_close(slim.double()(x2), ref.double()(x2))


def _plan(pg: gp.PrunableGraph, seed: int) -> gp.PruningPlan:
    g = torch.Generator().manual_seed(seed)
    k = a_group(pg).size
    drop = torch.randperm(k, generator=g)[: k // 2].tolist()
    return gp.PruningPlan.for_graph(pg).remove_channels(a_group(pg).id, drop)


def pinned(model: nn.Module, match: str, x: torch.Tensor = X) -> None:
    pg = gp.trace(model.eval(), x)
    g = a_group(pg)
    assert not g.prunable and g.reason is not None and match in g.reason, g.reason


@pytest.mark.parametrize("method", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dim", [1, 2, -1])
def test_softmax_as_a_method_traces_and_pins_only_over_channels(method: str, dim: int) -> None:
    model = Net(lambda s, h: s.b(getattr(h, method)(dim)))
    if dim == 1:
        pinned(model, "normalises over the channel dim")
    else:
        prunable_and_lossless(model, zero_preserving=False)


@pytest.mark.parametrize(
    "norm",
    [
        nn.InstanceNorm2d(8),
        nn.BatchNorm2d(8, affine=False, track_running_stats=False),
        nn.GroupNorm(4, 8, affine=False),
        nn.BatchNorm2d(8, affine=False),
    ],
    ids=["instance", "batch-no-state", "group-no-affine", "batch-stats-only"],
)
def test_norms_without_per_channel_tensors_prune(norm: nn.Module) -> None:
    prunable_and_lossless(Net(lambda s, h: s.b(s.n(h) + 0.5), n=norm), zero_preserving=False)


def test_clamp_with_a_tensor_bound_slices_the_bound() -> None:
    prunable_and_lossless(
        Net(lambda s, h: s.b(torch.clamp(h, min=s.lo)), lo=nn.Parameter(torch.randn(8, 1, 1))),
        zero_preserving=False,
    )


def test_pow_and_clamp_methods_with_tensor_operands_slice_them() -> None:
    prunable_and_lossless(
        Net(
            lambda s, h: s.b(h.abs().pow(s.p).clamp(s.lo, s.hi)),
            p=torch.rand(1, 8, 1, 1) + 1,
            lo=torch.full((8, 1, 1), -0.1),
            hi=torch.rand(8, 1, 1),
        ),
        zero_preserving=False,
    )


def test_a_channel_operand_without_layout_pins() -> None:
    model = Net(lambda s, h: s.b(torch.clamp(h, max=s.hi.view(1, 8, 1, 1))), hi=nn.Parameter(torch.rand(8)))
    pinned(model, "no channel")


def test_a_parameter_read_elsewhere_pins() -> None:
    model = Net(lambda s, h: (s.b(h * s.gamma), s.gamma.sum()), gamma=nn.Parameter(torch.rand(8, 1, 1)))
    pinned(model, "gamma")


def test_a_module_parameter_read_directly_pins() -> None:
    pinned(Net(lambda s, h: s.b(h) * s.a.weight.norm()), "a.weight")


def test_max_pool_on_channels_last_pins() -> None:
    body = Net(lambda s, h: s.b(F.max_pool2d(h.permute(0, 2, 3, 1), 3, 1, 1).permute(0, 3, 1, 2)))
    pinned(body, "pool")


def test_max_pool_module_on_channels_last_pins() -> None:
    body = Net(lambda s, h: s.b(s.p(h.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)), p=nn.MaxPool2d(3, 1, 1))
    pinned(body, "pool")


def test_avg_pool1d_over_features_pins() -> None:
    class Head(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a = nn.Conv2d(3, 8, 3, padding=1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            f = self.a(x).mean((2, 3))
            return self.fc(F.avg_pool1d(f, 3, 1, 1))

    pinned(Head(), "pool")


def test_pooling_over_space_stays_prunable() -> None:
    prunable_and_lossless(Net(lambda s, h: s.b(F.max_pool2d(h, 3, 1, 1) + F.avg_pool2d(h, 3, 1, 1))))


@pytest.mark.parametrize(
    "read",
    [
        lambda h: h.shape[1],
        lambda h: h.size(1),
        lambda h: h.size()[-3],
        lambda h: h.numel(),
        lambda h: len(h.permute(1, 0, 2, 3)),
    ],
    ids=["shape", "size", "size-tuple", "numel", "len"],
)
def test_a_channel_count_read_as_a_value_pins(read: object) -> None:
    pinned(Net(lambda s, h: (s.b(h), read(h))), "channel count")  # type: ignore[operator]
    pinned(Net(lambda s, h: s.b(h) / math.sqrt(read(h))), "channel count")  # type: ignore[operator]


def test_a_channel_count_compared_with_a_constant_pins() -> None:
    def body(s: nn.Module, h: torch.Tensor) -> torch.Tensor:
        torch._assert(h.shape[1] == 8, "eight channels")
        return s.b(h)

    pinned(Net(body), "channel count")


def test_a_channel_count_shaping_its_own_tensor_stays_prunable() -> None:
    def body(s: nn.Module, h: torch.Tensor) -> torch.Tensor:
        b, c, hh, w = h.shape
        g = h.view(b, 2, c // 2, hh * w).transpose(1, 2).reshape(b, c, hh, w)  # channel shuffle
        return s.b(g) * h.size(0)

    prunable_and_lossless(Net(body))


def _shuffled_pair(s: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """ShuffleNet's unit: cat two producers, then shuffle with the count read before the shuffle."""
    t = torch.cat([h, s.e(h)], 1)
    b, c, hh, w = t.size()
    g = t.view(b, 2, c // 2, hh, w).transpose(1, 2).contiguous()
    return s.f(g.view(b, c, hh, w))  # the count of t shapes g: the same channels, shuffled


def test_a_count_shaping_a_shuffle_of_its_channels_keeps_them_apart() -> None:
    """The count read from t shapes its shuffle g, which holds each of t's atoms once: the counts stay
    equal under any removal, so the shuffle adds no coupling beyond its own pairing (a's k-th channel with
    e's). Coupling t and g position by position would merge the atoms along the shuffle's cycles."""
    model = Net(_shuffled_pair, e=nn.Conv2d(8, 8, 1), f=nn.Conv2d(16, 4, 1))
    pg = gp.trace(model.eval(), X)
    g = a_group(pg)
    assert g.size == 8 and pg.group_of("e") is g
    f_in = next(m for m in g.members if m.target == "f")
    assert f_in.positions == tuple((2 * k, 2 * k + 1) for k in range(8))  # a[k] and e[k], side by side
    prunable_and_lossless(model)


def test_a_count_shaping_a_tensor_with_other_channels_couples_them() -> None:
    """h's count shapes y, produced elsewhere: equal only when they lose the same positions, so they are
    coupled position by position (one group, prunable)."""

    def body(s: nn.Module, h: torch.Tensor) -> torch.Tensor:
        y = s.e(h)
        return s.b(h) + s.f(y.reshape(y.shape[0], h.size(1), -1)).unsqueeze(-1)

    model = Net(body, e=nn.Conv2d(8, 8, 3, padding=1), f=nn.Conv1d(8, 4, 64))
    pg = gp.trace(model.eval(), X)
    assert pg.group_of("e") is a_group(pg) and a_group(pg).size == 8
    prunable_and_lossless(model)


def test_a_channel_count_shaping_another_tensor_pins_both() -> None:
    def body(s: nn.Module, h: torch.Tensor) -> torch.Tensor:
        y = s.e(h)  # 16 channels
        return s.b(h + y.reshape(y.shape[0], 2, h.size(1), 8, 8).sum(1))

    pinned(Net(body, e=nn.Conv2d(8, 16, 1)), "channel count")


def test_a_literal_channel_count_in_a_view_is_rewritten_to_the_new_count() -> None:
    def body(s: nn.Module, h: torch.Tensor) -> torch.Tensor:
        n = h.shape[0]
        g = torch.reshape(h.view(n, 8, -1).relu(), (n, 8, 8, 8))
        return s.b(g) + s.fc(h.reshape(shape=(-1, 8 * 8 * 8))).view(n, 4, 1, 1)

    prunable_and_lossless(Net(body, fc=nn.Linear(512, 4)))
    pinned(Net(lambda s, h: s.b(h.view(2, 4, 2, 8, 8).flatten(1, 2))), "constant")  # 4, 2: not the count


class Stream(nn.Module):
    """A ViT-style residual stream (tokens, channels last) with LayerNorms over the channels."""

    def __init__(self, affine: bool = True) -> None:
        super().__init__()
        self.a = nn.Linear(6, 8)
        self.ln1 = nn.LayerNorm(8, elementwise_affine=affine)
        self.mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8))
        self.ln2 = nn.LayerNorm(8, elementwise_affine=affine)
        self.head = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.a(x)
        h = h + self.mlp(self.ln1(h))
        return self.head(self.ln2(h))


@pytest.mark.parametrize("affine", [True, False])
def test_layer_norm_over_channels_prunes_only_on_opt_in(affine: bool) -> None:
    x = torch.randn(2, 5, 6)
    model = Stream(affine).eval()
    assert not gp.trace(model, x).group_of("a").prunable
    pg = gp.trace(model, x, prune_layernorm=True)
    g = pg.group_of("a")
    assert g.prunable and not g.lossless and all(h.lossless for h in pg.groups if h is not g)
    keep = [0, 2, 3, 5, 7]
    slim = gp.apply(pg, gp.PruningPlan().remove_channels("a", [1, 4, 6]))  # verified against KeptLayerNorm
    # independent reference: the same stream computed by hand on the kept channels
    w = {k: v.detach() for k, v in model.state_dict().items()}

    def ln(t: torch.Tensor, name: str) -> torch.Tensor:
        wt, bs = (w[f"{name}.weight"][keep], w[f"{name}.bias"][keep]) if affine else (None, None)
        return F.layer_norm(t, (len(keep),), wt, bs)

    h = F.linear(x, w["a.weight"][keep], w["a.bias"][keep])
    m = F.gelu(F.linear(ln(h, "ln1"), w["mlp.0.weight"][:, keep], w["mlp.0.bias"]))
    h = h + F.linear(m, w["mlp.2.weight"][keep], w["mlp.2.bias"][keep])
    expected = F.linear(ln(h, "ln2"), w["head.weight"][:, keep], w["head.bias"])
    with torch.no_grad():
        torch.testing.assert_close(slim(x), expected)
    with torch.no_grad():  # and it is not lossless: the unpruned model differs
        assert not torch.allclose(slim(x), model(x), atol=1e-3)


# ---- sums over the channels: a zeroed channel adds nothing, so the group stays prunable


@pytest.mark.parametrize(
    "reduce",
    [
        lambda h: (h * h).sum(1, keepdim=True),
        lambda h: h.pow(2).sum(dim=1, keepdim=True),
        lambda h: torch.linalg.vector_norm(h, dim=1, keepdim=True),
        lambda h: h.norm(dim=1, keepdim=True),
        lambda h: torch.norm(h, p=1, dim=1, keepdim=True),
        lambda h: h.abs().sum(1, keepdim=True),
        lambda h: torch.linalg.vector_norm(h.relu(), float("inf"), dim=1, keepdim=True),
    ],
)
def test_a_sum_over_the_channels_stays_prunable(reduce: object) -> None:
    prunable_and_lossless(Net(lambda s, h: s.b(h) + reduce(h)))  # type: ignore[operator]
    prunable_and_lossless(Net(lambda s, h: s.b(h / (reduce(h) + 1.0))))  # type: ignore[operator]


@pytest.mark.parametrize("p", [2.0, 1.0, float("inf")])
def test_normalize_over_the_channels_stays_prunable(p: float) -> None:
    prunable_and_lossless(Net(lambda s, h: s.b(F.normalize(h, p=p, dim=1))))
    pinned(Net(lambda s, h: s.b(F.normalize(h, p=-p, dim=1))), "normalize over the channel dim")


@pytest.mark.parametrize(
    "reduce",
    [
        lambda h: h.mean(1, keepdim=True),
        lambda h: h.relu().amax(1, keepdim=True),
        lambda h: torch.linalg.vector_norm(h, -1, dim=1, keepdim=True),
        lambda h: torch.logsumexp(h, 1, keepdim=True),
    ],
)
def test_a_reduction_a_zero_channel_changes_pins(reduce: object) -> None:
    pinned(Net(lambda s, h: s.b(h) + reduce(h)), "channel")  # type: ignore[operator]


# ---- contractions over the channels (q^T k) couple both operands


def _attention(contract: object) -> nn.Module:
    def body(s: nn.Module, h: torch.Tensor) -> torch.Tensor:
        q, k = h.flatten(2), s.k(h).flatten(2)  # (n, 8, 64) each, channels on dim 1
        a = contract(q, k)  # type: ignore[operator]
        return s.b(h) + a.flatten(1).sum(1).view(-1, 1, 1, 1)

    return Net(body, k=nn.Conv2d(8, 8, 1))


@pytest.mark.parametrize(
    "contract",
    [
        lambda q, k: torch.matmul(q.transpose(-1, -2), k),
        lambda q, k: q.transpose(1, 2) @ k,
        lambda q, k: torch.bmm(q.transpose(1, 2), k),
        lambda q, k: torch.einsum("bci,bcj->bij", q, k),
    ],
)
def test_a_contraction_over_the_channels_of_both_operands_prunes(contract: object) -> None:
    model = _attention(contract)
    prunable_and_lossless(model)
    pg = gp.trace(model.eval(), X)
    assert {m.target for m in a_group(pg).members} >= {"a", "k"}  # q's and k's channels go together
    from graphprune.efficiency import FlopsModel

    plan = _plan(pg, 0)
    slim = gp.apply(pg, plan)
    assert FlopsModel(pg).flops(plan.channels) == gp.count_flops(slim, X)  # the product shrinks too


@pytest.mark.parametrize(
    "contract",
    [
        lambda q, k: torch.matmul(q, k.transpose(1, 2)),  # over the pixels: channels stay in the result
        lambda q, k: torch.einsum("bci,bdi->bcd", q, k),
        lambda q, k: torch.matmul(q.transpose(1, 2), k.sum(1, keepdim=True).expand(-1, 8, -1)),  # no channels
    ],
)
def test_a_contraction_not_over_shared_channels_pins(contract: object) -> None:
    pinned(_attention(contract), "contract")


def test_a_contraction_with_a_constant_operand_pins() -> None:
    def body(s: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return s.b(h) + torch.matmul(h.flatten(2).transpose(1, 2), s.w).sum(-1).view(-1, 1, 8, 8)

    pinned(Net(body, w=torch.randn(8, 3)), "contract")


def test_functional_layer_norm_over_channels_prunes_only_on_opt_in() -> None:
    """torchvision's LayerNorm2d (ConvNeXt's stem and downsampling) calls F.layer_norm between permutes."""
    from graphprune.torchvision_compat import import_torchvision

    model = Net(lambda s, h: s.b(s.ln(h)), ln=import_torchvision().models.convnext.LayerNorm2d(8)).eval()
    with torch.no_grad():
        model.ln.weight.uniform_(0.5, 1.5)
        model.ln.bias.uniform_(-0.5, 0.5)
    pinned(model, "--prune-layernorm opts in")
    pg = gp.trace(model, X, prune_layernorm=True)
    g = a_group(pg)
    assert g.prunable and not g.lossless
    slim = gp.apply(pg, gp.PruningPlan.for_graph(pg).remove_channels(g.id, [1, 4, 6]))  # verified
    keep = [0, 2, 3, 5, 7]
    w = {k: v.detach() for k, v in model.state_dict().items()}
    h = F.conv2d(X, w["a.weight"][keep], w["a.bias"][keep], padding=1).permute(0, 2, 3, 1)
    h = F.layer_norm(h, (5,), w["ln.weight"][keep], w["ln.bias"][keep], model.ln.eps).permute(0, 3, 1, 2)
    expected = F.conv2d(h, w["b.weight"][:, keep], w["b.bias"], padding=1)
    with torch.no_grad():
        torch.testing.assert_close(slim(X), expected)
        assert not torch.allclose(slim(X), model(X), atol=1e-3)  # not lossless


def test_convnext_residual_streams_prune_on_opt_in() -> None:
    """torchvision's ConvNeXt: every stage's residual stream passes LayerNorms (modules and LayerNorm2d)."""
    from graphprune.torchvision_compat import import_torchvision

    model = import_torchvision().models.convnext_tiny().eval()
    x = torch.randn(1, 3, 32, 32)
    assert sum(not g.prunable for g in gp.trace(model, x).groups) == 6  # 4 streams + model input, output
    pg = gp.trace(model, x, prune_layernorm=True)
    streams = [g for g in pg.groups if not g.lossless]
    assert len(streams) == 4 and all(g.prunable for g in streams)
    plan = gp.PruningPlan.for_graph(pg)
    for g in streams:
        plan.remove_channels(g.id, list(range(0, g.size, 4)))
    slim = gp.apply(pg, plan)  # verified against the LayerNorms over the kept channels
    assert pg.not_lossless_groups(plan) == [g.id for g in streams]
    assert gp.count_flops(slim, x) < pg.flops


def _norm_tensors() -> dict[str, nn.Parameter | torch.Tensor]:
    return dict(
        w=nn.Parameter(torch.rand(8) + 0.5),
        bb=nn.Parameter(torch.randn(8)),
        rm=torch.randn(8),
        rv=torch.rand(8) + 0.5,
    )


@pytest.mark.parametrize(
    "body",
    [
        lambda s, h: s.b(F.relu(F.batch_norm(h, s.rm, s.rv, s.w, s.bb))),
        lambda s, h: s.b(F.batch_norm(h, s.rm, s.rv)),
        lambda s, h: s.b(F.instance_norm(h, s.rm, s.rv, s.w, s.bb)),
        lambda s, h: s.b(F.group_norm(h, 4, s.w, s.bb)),
        lambda s, h: s.b(F.group_norm(h, 2)),
    ],
    ids=["batch_norm", "batch_norm_stats_only", "instance_norm", "group_norm", "group_norm_no_affine"],
)
def test_functional_norms_on_module_tensors_prune_losslessly(body: object) -> None:
    """timm's BatchNormAct2d / GroupNormAct call the functions with their own tensors: sliced, lossless."""
    prunable_and_lossless(Net(body, **_norm_tensors()), zero_preserving=False)


def test_functional_group_norm_removes_whole_norm_groups() -> None:
    pg = gp.trace(Net(lambda s, h: s.b(F.group_norm(h, 4, s.w, s.bb)), **_norm_tensors()).eval(), X)
    assert a_group(pg).size == 4  # 8 channels in 4 norm groups of 2


def test_functional_norm_tensor_read_elsewhere_pins() -> None:
    body = Net(lambda s, h: (s.b(F.batch_norm(h, s.rm, s.rv, s.w, s.bb)), s.w.sum()), **_norm_tensors())
    pinned(body, "w is also read")


def _timm_layers() -> Any:
    try:
        return import_timm().layers
    except ModelSpecError:
        pytest.skip("timm is not installed")


def test_timm_batch_norm_act_prunes_losslessly() -> None:
    layers = _timm_layers()
    norm = layers.BatchNormAct2d(8, act_layer=nn.ReLU)
    with torch.no_grad():
        norm.running_mean.uniform_(-1, 1)
        norm.running_var.uniform_(0.5, 2)
    prunable_and_lossless(Net(lambda s, h: s.b(s.n(h)), n=norm), zero_preserving=False)


def test_timm_dynamic_padding_conv_is_a_conv_leaf_and_prunes_losslessly() -> None:
    layers = _timm_layers()
    model = Net(lambda s, h: s.b(s.cv(h)), cv=layers.Conv2dSame(8, 8, 3, stride=2))
    prunable_and_lossless(model)
    pg = gp.trace(model.eval(), X)
    assert pg.group_of("cv").prunable  # its own output channels too


def test_timm_weight_standardised_conv_pins_its_input_with_the_reason() -> None:
    layers = _timm_layers()
    pinned(Net(lambda s, h: s.b(s.cv(h)), cv=layers.ScaledStdConv2d(8, 8, 3)), "standardises its weight")


def test_functional_depthwise_conv_on_a_stored_filter_prunes_losslessly() -> None:
    """timm's BlurPool2d: F.conv2d(x, self.filt, groups=channels); the filter and `groups` follow."""
    w = torch.randn(8, 1, 3, 3)
    prunable_and_lossless(Net(lambda s, h: s.b(F.conv2d(h, s.w, stride=2, padding=1, groups=8)), w=w))


def test_functional_conv_mixing_channels_pins_with_the_reason() -> None:
    w = nn.Parameter(torch.randn(8, 8, 1, 1))
    pinned(Net(lambda s, h: s.b(F.conv2d(h, s.w)), w=w), "called as a function")


def _radix(h: torch.Tensor) -> torch.Tensor:
    return h.view(h.shape[0], 2, -1, h.shape[2], h.shape[3])  # a (radix, channel) grid, as ResNeSt's


@pytest.mark.parametrize(
    "body",
    [
        lambda s, h: s.b(torch.cat([_radix(h).sum(1), _radix(h).amax(1)], 1)),
        lambda s, h: s.b((_radix(h) * _radix(h).softmax(1)).flatten(1, 2)),
    ],
    ids=["sum_and_amax_over_radix", "softmax_over_radix"],
)
def test_an_op_over_one_of_two_channel_dims_prunes_whole_fibers(body: object) -> None:
    model = Net(body)
    prunable_and_lossless(model, zero_preserving=False)
    assert a_group(gp.trace(model.eval(), X)).size == 4  # channel j goes with its fiber (0, j), (1, j)
