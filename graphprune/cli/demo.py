"""`graphprune demo`: the whole learned pipeline on an embedded default, in a few minutes on 2 cores.

ResNet-20 from the shared JPEG baseline on the shared CIFAR-10 JPEG zip: `abp+wgates` to half the FLOPs
(ABP removes blocks, then W-Gates channels), a short fine-tune with KD from the original, ONNX export,
top-1 before and after, and report.md. Without the shared data it falls back to Fashion-MNIST from
Debian's `dataset-fashion-mnist`, where no trained weights exist, so a ResNet-20 is trained briefly first.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from graphprune.cli.console import note, step
from graphprune.cli.options import out_dir_option
from graphprune.cli.training import print_run_summary
from graphprune.errors import GraphpruneError
from graphprune.fileio import check_writable_dir

CIFAR_MODEL = "graphprune:cifar_resnet20"
CIFAR_WEIGHTS = "cifar10jpeg_resnet20.th"
FMNIST_MODEL = "graphprune:fmnist_resnet20"
BASELINE_FILE = "baseline.safetensors"


@dataclass(frozen=True)
class DemoSetup:
    """What the demo prunes: MODEL, its trained weights (None: train a baseline first) and the data."""

    model: str
    weights: Path | None
    data: str


def demo_setup(dataset: str = "auto") -> DemoSetup:
    """The shared CIFAR-10 JPEG data and ResNet-20 baseline, else Debian's Fashion-MNIST."""
    from graphprune import shared
    from graphprune.train.datasets import FASHION_MNIST_DIR

    if dataset in ("auto", "cifar10"):
        try:
            zip_path, weights = shared.cifar10_jpeg_zip(), shared.weights_file(CIFAR_WEIGHTS)
        except GraphpruneError as exc:
            if dataset == "cifar10":
                raise
            missing = str(exc)
        else:
            return DemoSetup(CIFAR_MODEL, weights, f"cifar10:{zip_path}")
    if not FASHION_MNIST_DIR.is_dir():
        raise GraphpruneError(
            f"demo needs the CIFAR-10 JPEG data and weights in {shared.shared_dir()} (set GRAPHPRUNE_SHARED) "
            f"or Fashion-MNIST in {FASHION_MNIST_DIR} (apt-get install dataset-fashion-mnist)"
        )
    if dataset == "auto":
        note(f"{missing}; falling back to Fashion-MNIST from Debian's dataset-fashion-mnist")
    return DemoSetup(FMNIST_MODEL, None, f"fashion-mnist:{FASHION_MNIST_DIR}")


def _train_baseline(setup: DemoSetup, out_dir: Path, cfg: Any, limit: int) -> Path:
    """Fashion-MNIST has no trained ResNet-20 to start from: train one briefly, save it in `out_dir`."""
    from graphprune.checkpoint import save_safetensors
    from graphprune.modelspec import resolve_model
    from graphprune.train import fit, load_data

    note("no trained weights for Fashion-MNIST: training a ResNet-20 baseline first")
    with step(f"Loading {setup.data}"):
        data = load_data(setup.data, limit=limit)
    model = resolve_model(setup.model).model
    fit(model, data, cfg, run_dir=out_dir, stage="baseline")
    path = out_dir / BASELINE_FILE
    save_safetensors(model.state_dict(), path)
    return path


@click.command(
    short_help="The learned pipeline on ResNet-20 + CIFAR-10 JPEG, in a few minutes.",
    epilog="""\b
Examples:
  graphprune demo
  graphprune demo --out /tmp/demo --target-flops 0.4
  graphprune demo --dataset fashion-mnist --steps 20
\b
Data: the CIFAR-10 JPEG zip and cifar10jpeg_resnet20.th in the shared directory ($GRAPHPRUNE_SHARED,
default ../shared); without them, Fashion-MNIST from Debian's dataset-fashion-mnist package.
""",
)
@out_dir_option("./graphprune-demo")
@click.option(
    "--target-flops",
    type=click.FloatRange(0.0, 1.0, min_open=True),
    default=0.5,
    show_default=True,
    metavar="FRACTION",
    help="Fraction of the original FLOPs to keep.",
)
@click.option(
    "--method",
    type=click.Choice(["abp+wgates", "wgates", "abp", "l1"]),
    default="abp+wgates",
    show_default=True,
    help="Pruning method.",
)
@click.option(
    "--dataset",
    type=click.Choice(["auto", "cifar10", "fashion-mnist"]),
    default="auto",
    show_default=True,
    help="auto: the shared CIFAR-10 JPEG data if present, else Fashion-MNIST.",
)
@click.option(
    "--train-images",
    type=click.IntRange(min=10),
    default=10000,
    show_default=True,
    help="Training images used (class-balanced); the test split is evaluated in full up to this many.",
)
@click.option("--steps", type=click.IntRange(min=1), help="Cap every training stage at this many steps.")
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def demo(
    out_dir: Path,
    target_flops: float,
    method: str,
    dataset: str,
    train_images: int,
    steps: int | None,
    no_export: bool,
) -> None:
    """Prune ResNet-20 with a learned method to a FLOPs target, fine-tune with distillation, export,
    evaluate, and write report.md with top-1 before and after. One epoch of the training images per stage:
    ABP's gate training and pruning, W-Gates' gate training, the fine-tune."""
    from graphprune.methods import Budget
    from graphprune.methods.pipeline import PipelineRequest, run
    from graphprune.train import TrainConfig

    setup = demo_setup(dataset)
    check_writable_dir(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    note(f"pruning {setup.model} on {setup.data} with {method} to {target_flops:g} of the FLOPs")
    batch = min(128, train_images)  # a small --train-images still makes one batch
    cfg = TrainConfig(epochs=1, max_steps=steps, lr=0.02, batch_size=batch, log_every=20)
    weights = setup.weights
    if weights is None:
        baseline_cfg = TrainConfig(epochs=2, max_steps=steps, lr=0.1, batch_size=batch)
        weights = _train_baseline(setup, out_dir, baseline_cfg, train_images)
    stage_epochs = {"abp+wgates": [1, 1, 1], "abp": [1, 1], "wgates": [1], "l1": None}[method]
    request = PipelineRequest(
        model=setup.model, out_dir=out_dir, weights=str(weights), method=method,
        budget=Budget(target_flops=target_flops), data=setup.data, finetune=cfg,
        method_train=cfg, data_limit=train_images, export=not no_export,
        options={"round_to": 8, "epochs": stage_epochs, "scope": "global"},
    )  # fmt: skip
    print_run_summary(run(request, step), out_dir)
