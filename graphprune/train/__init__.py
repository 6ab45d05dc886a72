"""The training layer: datasets as uint8 tensors, a plain training loop, distillation, evaluation.

from graphprune.train import TrainConfig, evaluate, fit, load_data
data = load_data("cifar10:../shared/data/cifar10-jpeg.zip")
result = fit(model, data, TrainConfig(epochs=1), teacher=original, run_dir="runs/r20")
print(evaluate(model, data).top1)
"""

from __future__ import annotations

from graphprune.train.bn_recal import recalibrate_bn
from graphprune.train.config import TrainConfig
from graphprune.train.data import DataBundle, DataError, ImageTensors, load_data
from graphprune.train.distill import distill_loss
from graphprune.train.evaluate import EvalResult, evaluate
from graphprune.train.loader import Augment, BatchLoader
from graphprune.train.loop import FitResult, fit

finetune = fit  # the name for the same loop

__all__ = [
    "Augment",
    "BatchLoader",
    "DataBundle",
    "DataError",
    "EvalResult",
    "FitResult",
    "ImageTensors",
    "TrainConfig",
    "distill_loss",
    "evaluate",
    "finetune",
    "fit",
    "load_data",
    "recalibrate_bn",
]
