from __future__ import annotations

import torch

from graphprune.torchvision_compat import import_torchvision


def test_import_is_idempotent() -> None:
    assert import_torchvision() is import_torchvision()


def test_resnet18_runs() -> None:
    torchvision = import_torchvision()
    model = torchvision.models.resnet18(weights=None).eval()
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64))
    assert out.shape == (1, 1000)
