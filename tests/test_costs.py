from __future__ import annotations

import contextlib
from collections.abc import Iterator
from unittest import mock

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import graphprune as gp
from graphprune.models import get_model
from graphprune.torchvision_compat import import_torchvision


def macs_by_hooks(model: nn.Module, x: torch.Tensor) -> int:
    """Independent count: conv / linear MACs from forward hooks on the real modules."""
    total = 0

    def hook(m: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        per_sample = out[0].numel()
        if isinstance(m, nn.Conv2d):
            total += per_sample * (m.in_channels // m.groups) * m.kernel_size[0] * m.kernel_size[1]
        else:
            total += per_sample * m.in_features

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model.eval()(x)
    for h in hooks:
        h.remove()
    return total


@pytest.mark.parametrize(
    "name", ["cifar_resnet20", "cifar_resnet56", "cifar_mobilenetv2", "cifar_resnet20_b"]
)
def test_flops_match_an_independent_count(name: str) -> None:
    model, x = get_model(name), torch.randn(1, 3, 32, 32)
    assert gp.count_flops(model, x) == macs_by_hooks(model, x)


def test_resnet56_has_the_published_cost() -> None:
    pg = gp.trace(get_model("cifar_resnet56"), torch.randn(1, 3, 32, 32))
    assert round(pg.flops / 1e6, 1) == 125.5 and round(pg.params / 1e6, 2) == 0.85
    assert sum(c.flops for c in pg.layer_costs) == pg.flops


def test_flops_are_per_sample() -> None:
    model = get_model("cifar_resnet20")
    assert gp.count_flops(model, torch.randn(1, 3, 32, 32)) == gp.count_flops(
        model, torch.randn(4, 3, 32, 32)
    )


class Attention(nn.Module):
    """Every way of writing a product: F.linear, F.conv2d, einsum, bmm, sdpa and nn.MultiheadAttention."""

    def __init__(self, e: int = 16) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(e, e))
        self.k = nn.Parameter(torch.randn(e, e, 1, 1))
        self.mha = nn.MultiheadAttention(e, 4, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (n, l, e)
        h = torch.nn.functional.linear(x, self.w)
        h = torch.nn.functional.conv2d(h.transpose(1, 2).unsqueeze(-1), self.k).squeeze(-1).transpose(1, 2)
        g = torch.einsum("nle,nme->nlm", h, h)
        h = torch.bmm(g, h)
        q = h.unflatten(-1, (4, -1)).transpose(1, 2)
        h = torch.nn.functional.scaled_dot_product_attention(q, q, q).transpose(1, 2).flatten(2)
        return self.mha(h, h, h, need_weights=False)[0]


def attention_macs(n: int, length: int, e: int) -> int:
    """Hand count per sample: linear, 1x1 conv, einsum, bmm, sdpa (two products), MHA (4 projections + 2)."""
    del n
    dense = length * e * e
    return (
        dense
        + dense
        + length * length * e
        + length * length * e
        + 2 * length * length * e
        + (4 * dense + 2 * length * length * e)
    )


@pytest.mark.parametrize("device", ["cpu", "meta"])
def test_every_product_is_counted(device: str) -> None:
    """CPU runs the fused attention kernels, meta runs the composite ones: both count the same products."""
    with torch.device(device):
        model, x = Attention().eval(), torch.randn(2, 10, 16)
    assert gp.count_flops(model, x) == attention_macs(2, 10, 16)


def test_counts_agree_with_torch_flop_counter() -> None:
    """Cross-check with torch.utils.flop_counter on a meta run (no fused kernels): MACs = FLOPs / 2."""
    with torch.device("meta"):
        model, x = Attention(), torch.randn(3, 10, 16)
    with FlopCounterMode(display=False) as counter:
        model(x)
    assert gp.count_flops(model, x) * 2 * 3 == counter.get_total_flops()


def test_transposed_and_grouped_convs() -> None:
    model = nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2), nn.Conv2d(6, 6, 3, groups=3))
    x = torch.randn(1, 4, 5, 5)
    assert gp.count_flops(model, x) == 4 * 5 * 5 * 6 * 9 + 6 * 9 * 9 * 2 * 9


def test_layer_costs_name_functions_by_node() -> None:
    pg = gp.trace(Attention(), torch.randn(1, 10, 16))
    kinds = {c.kind for c in pg.layer_costs}
    assert {
        "linear",
        "conv2d",
        "einsum",
        "bmm",
        "scaled_dot_product_attention",
        "MultiheadAttention",
    } <= kinds


@contextlib.contextmanager
def _no_init() -> Iterator[None]:
    """Skip weight initialisation (the tensors are never read)."""
    names = ["uniform_", "normal_", "zeros_", "ones_", "constant_", "kaiming_uniform_", "kaiming_normal_"]
    names += ["trunc_normal_", "xavier_uniform_"]
    with contextlib.ExitStack() as stack:
        for name in names:
            stack.enter_context(mock.patch.object(nn.init, name, lambda t, *a, **k: t))
        yield


def meta_classifier(name: str) -> tuple[nn.Module, torch.Tensor]:
    """torchvision classifier `name` on the meta device, with an input at its weights' crop size."""
    tv = import_torchvision()
    crop = tv.models.get_model_weights(name).DEFAULT.transforms().crop_size[0]
    kwargs = {"image_size": crop} if name.startswith("vit_") else {}
    try:
        with torch.device("meta"):
            model = tv.models.get_model(name, **kwargs)
    except NotImplementedError:  # builders that compute widths with tensors (RegNet) need real ones
        with _no_init():
            model = tv.models.get_model(name, **kwargs).to("meta")
    return model.eval(), torch.empty(1, 3, crop, crop, device="meta")


def published_classifiers() -> list[str]:
    tv = import_torchvision()
    names = tv.models.list_models(module=tv.models)
    return [n for n in names if "_ops" in tv.models.get_model_weights(n).DEFAULT.meta]


@pytest.mark.zoo
@pytest.mark.filterwarnings("ignore:The default weight initialization")
@pytest.mark.parametrize("name", published_classifiers())
def test_flops_match_torchvision_published_ops(name: str) -> None:
    """Within 1% of torchvision's `_ops` (GFLOPS in its docs, MACs in fact); meta device, no compute."""
    tv = import_torchvision()
    published = tv.models.get_model_weights(name).DEFAULT.meta["_ops"] * 1e9
    model, x = meta_classifier(name)
    # `_ops` is published with 3 decimals (GFLOPS): a tiny model's 0.040 is anything in 0.0395..0.0405.
    assert gp.count_flops(model, x) == pytest.approx(published, rel=0.01, abs=0.5e6)
