"""BatchNorm recalibration: re-estimate running statistics after a structural change.

Removing blocks or channels shifts the statistics every later BatchNorm sees; its stored running mean
and variance are then wrong, and a pruned net scores far below what its weights can do. Re-estimating
them on about a thousand training images, with the weights untouched, is the adaptive-BN evaluation of
EagleEye (Li et al., ECCV 2020): seconds, and it ranks pruned candidates as fine-tuning later does.
"""

from __future__ import annotations

import torch
from torch import nn

from graphprune.train.data import DataBundle

BatchNorms = (nn.modules.batchnorm._BatchNorm,)


@torch.no_grad()
def recalibrate_bn(
    model: nn.Module,
    data: DataBundle,
    *,
    images: int = 1024,
    batch_size: int = 256,
    seed: int = 0,
    split: str = "train",
) -> nn.Module:
    """Re-estimate every BatchNorm's running statistics of `model`, in place, on a fixed class-stratified
    sample of `images` un-augmented images of `split`; returns `model`.

    Statistics are the exact average over the sample (momentum None while it runs); weights, the other
    buffers and every module's train/eval mode are as before."""
    norms = [m for m in model.modules() if isinstance(m, BatchNorms) and m.track_running_stats]
    if not norms:
        return model
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    sample = data.sampled(split, images, seed)
    loader = sample.loader(split, batch_size, shuffle=False, augment=False, device=device, drop_last=False)
    modes = {m: m.training for m in model.modules()}
    momenta = [m.momentum for m in norms]
    try:
        model.eval()
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the sample
            m.train()
        for x, _ in loader:
            model(x)
    finally:
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        for module, training in modes.items():
            module.train(training)
    return model
