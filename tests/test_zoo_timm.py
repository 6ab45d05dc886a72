"""CI subset of the timm zoo: L1 to half the FLOPs, applied and verified lossless, on ten timm models."""

from __future__ import annotations

import pytest
from zoo_timm import TARGET, build, check_l1

from graphprune.errors import ModelSpecError
from graphprune.timm_compat import import_timm

CI_TIMM = [
    "efficientnet_b0",
    "mobilenetv3_small_050",
    "regnetx_002",
    "tf_efficientnetv2_b0",  # Conv2dSame: a leaf with the conv rule
    "mobilenetv4_conv_small",
    "regnety_002",
    "mixnet_s",  # MixedConv2d: split, per-split convs, cat
    "ghostnet_100",
    "resnet18d",
    "mobileone_s0",
]


@pytest.mark.zoo
@pytest.mark.parametrize("name", CI_TIMM)
def test_timm_model_reaches_half_the_flops_losslessly(name: str) -> None:
    try:
        import_timm()
    except ModelSpecError:
        pytest.skip("timm is not installed")
    model, x = build(name, size=64)
    result = check_l1(name, model, x, export=False)  # apply verifies against the masked reference
    assert result.stage == "done", f"{name} failed at {result.stage}: {result.error}"
    assert result.l1_flops <= TARGET + 0.01, result
    assert result.blocks > 0, result  # residual adds found as removable blocks
