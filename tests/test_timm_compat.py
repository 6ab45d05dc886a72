"""timm's building blocks through the pipeline: each prunes losslessly; residual branches are blocks."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from support.lossless import check_lossless, check_plan_lossless
from torch import nn

import graphprune as gp
from graphprune.errors import ModelSpecError
from graphprune.timm_compat import import_timm

X = torch.randn(2, 8, 16, 16)


def _timm() -> Any:
    try:
        return import_timm()
    except ModelSpecError:
        pytest.skip("timm is not installed")


def _blocks() -> dict[str, Any]:
    timm = _timm()
    from timm.models._efficientnet_blocks import DepthwiseSeparableConv, InvertedResidual

    layers = timm.layers
    bn_act = layers.get_norm_act_layer("batchnorm2d", "relu")
    return {
        "inverted_residual_se_droppath": InvertedResidual(
            8, 8, exp_ratio=3, se_layer=layers.SqueezeExcite, drop_path_rate=0.2, norm_layer=bn_act
        ),
        "depthwise_separable_effective_se": DepthwiseSeparableConv(
            8, 8, se_layer=layers.EffectiveSEModule, drop_path_rate=0.2, norm_layer=bn_act
        ),
        "mixed_conv": layers.MixedConv2d(8, 12, kernel_size=[3, 5, 7]),
        "selective_kernel": layers.SelectiveKernel(8, 8),
        "blur_pool": layers.BlurPool2d(8),
    }


@pytest.mark.parametrize(
    "name",
    [
        "inverted_residual_se_droppath",
        "depthwise_separable_effective_se",
        "mixed_conv",
        "selective_kernel",
        "blur_pool",
    ],
)
def test_timm_building_block_prunes_losslessly(name: str) -> None:
    block = _blocks()[name]
    model = nn.Sequential(nn.Conv2d(8, 8, 1), block, nn.Conv2d(_out(block), 4, 1)).eval()
    pg = gp.trace(model, X)
    assert pg.prunable_groups, [g.reason for g in pg.groups]
    for seed in range(2):
        check_lossless(model, X, seed, ratio=0.4)


def _out(block: nn.Module) -> int:
    with torch.no_grad():
        return int(block.eval()(X).shape[1])


@pytest.mark.parametrize("name", ["inverted_residual_se_droppath", "depthwise_separable_effective_se"])
def test_timm_residual_shortcut_plus_drop_path_is_a_removable_block(name: str) -> None:
    model = nn.Sequential(nn.Conv2d(8, 8, 1), _blocks()[name], nn.Conv2d(8, 4, 1)).eval()
    pg = gp.trace(model, X)
    (block,) = pg.blocks
    check_plan_lossless(pg, gp.PruningPlan.for_graph(pg).remove_block(block.name))
