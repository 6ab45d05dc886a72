"""Zoo test: the whole pipeline on real architectures (a torchvision subset and the built-ins)."""

from __future__ import annotations

import pytest
import torch
from support.lossless import check_lossless
from zoo_harness import check_model

from graphprune.models import default_input_shape, get_model, list_models
from graphprune.torchvision_compat import import_torchvision

CI_TORCHVISION = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "mobilenet_v3_small",
    "efficientnet_b0",
    "densenet121",
    "regnet_y_400mf",
    "resnext50_32x4d",
    "shufflenet_v2_x1_0",
    "googlenet",
    "convnext_tiny",
]


def _torchvision(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return import_torchvision().models.get_model(name, weights=None).eval()


def _assert_done(result) -> None:  # type: ignore[no-untyped-def]
    assert result.stage == "done", f"{result.model} failed at {result.stage}: {result.error}"
    assert result.pruned_flops < result.flops and result.pruned_params < result.params
    assert result.onnx_nodes > 0 and result.onnx_max_rel_error < 1e-3


@pytest.mark.zoo
@pytest.mark.parametrize("name", CI_TORCHVISION)
def test_torchvision_model(name: str) -> None:
    _assert_done(check_model(name, _torchvision(name), torch.randn(1, 3, 128, 128)))


@pytest.mark.zoo
@pytest.mark.parametrize("name", list_models())
def test_builtin_model(name: str) -> None:
    torch.manual_seed(0)
    _assert_done(check_model(name, get_model(name).eval(), torch.randn(default_input_shape(name))))


@pytest.mark.zoo
@pytest.mark.parametrize("name", CI_TORCHVISION)
def test_torchvision_model_is_lossless_with_block_and_channel_removal(name: str) -> None:
    check_lossless(_torchvision(name), torch.randn(2, 3, 64, 64), seed=1, ratio=0.3, blocks=0.5)


@pytest.mark.zoo
@pytest.mark.parametrize("name", list_models())
def test_builtin_model_is_lossless_with_block_and_channel_removal(name: str) -> None:
    torch.manual_seed(0)
    x = torch.randn(2, *default_input_shape(name)[1:])
    check_lossless(get_model(name).eval(), x, seed=2, ratio=0.3, blocks=0.5)
