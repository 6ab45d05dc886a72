"""What the trained CIFAR benchmarks share: the distilled fine-tune every arm ends with, the control arm
(the unpruned model trained as long), and the measurement of a finished arm."""

from __future__ import annotations

import copy
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import graphprune as gp
from graphprune.export import export_onnx
from graphprune.train import TrainConfig, evaluate, fit


def distil(
    model: torch.nn.Module, original: torch.nn.Module, data: Any, cfg: TrainConfig, epochs: int, run: Path
) -> None:
    """Fine-tune `model` in place for `epochs` with CE + KD from `original`; resumes inside the stage."""
    if epochs > 0:
        fit(
            model,
            data,
            replace(cfg, epochs=epochs),
            teacher=original,
            run_dir=run,
            stage="finetune",
            resume=True,
        )


def measure(
    model: torch.nn.Module, data: Any, x: torch.Tensor, onnx: Path | None, cfg: TrainConfig
) -> dict[str, Any]:
    """Top-1, MACs and params; with `onnx`, also the verified ONNX export the latency pairs time."""
    model = model.cpu().eval()
    if onnx is not None:
        export_onnx(model, x, onnx)
    test = evaluate(model, data, "test", batch_size=cfg.eval_batch_size)
    return {
        "top1": test.top1,
        "flops": int(gp.count_flops(model, x)),
        "params": int(gp.count_params(model)),
        "onnx": onnx.name if onnx is not None else None,
    }


def control(
    original: torch.nn.Module,
    data: Any,
    x: torch.Tensor,
    cfg: TrainConfig,
    epochs: int,
    run: Path,
    onnx: Path | None,
) -> dict[str, Any]:
    """The unpruned model distilled from itself for `epochs`, measured (the original is left untouched)."""
    model = copy.deepcopy(original)
    distil(model, original, data, cfg, epochs, run)
    return measure(model, data, x, onnx, cfg)
