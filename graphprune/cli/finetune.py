"""`graphprune finetune`: fine-tune MODEL (pruned first by --plan) on --data with KD; export; report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from graphprune.cli.console import step
from graphprune.cli.options import (
    MODEL_HELP,
    leaf_modules,
    model_options,
    out_dir_option,
    prune_layernorm,
)
from graphprune.cli.pipeline import load_plan, opt_str
from graphprune.cli.training import data_options, print_run_summary, train_config, train_options
from graphprune.fileio import check_writable_dir


@click.command(
    short_help="Fine-tune MODEL (optionally pruned by a plan) on a dataset, with distillation.",
    epilog="""\b
Examples:
  graphprune finetune graphprune:cifar_resnet20 --weights r20.th --plan out/r20/plan.json \\
      --data cifar10:../shared/data/cifar10-jpeg.zip --epochs 2 --out runs/r20-ft
  graphprune finetune my_net.py:build --input-shape 1,1,28,28 --data fashion-mnist: \\
      --epochs 5 --no-kd --out runs/net
""",
    help="Fine-tune MODEL on --data and write model.safetensors, plan.json, model.json, model.onnx, "
    "metrics.jsonl and report.md into DIR. With --plan the model is pruned first and, unless --no-kd, "
    "distils from the unpruned MODEL (or --kd-from TEACHER).\n" + MODEL_HELP,
)
@model_options
@click.option(
    "--plan", "plan_path", type=click.Path(path_type=Path), metavar="PLAN.json", help="Prune first."
)
@data_options
@click.option("--epochs", type=click.IntRange(min=1), required=True, help="Epochs of fine-tuning.")
@click.option(
    "--kd-from", "kd_from", metavar="TEACHER", help="Teacher MODEL spec (default: the unpruned MODEL)."
)
@click.option("--kd-weights", type=click.Path(path_type=Path), metavar="FILE", help="Weights of --kd-from.")
@click.option("--no-kd", is_flag=True, help="Plain cross-entropy, no teacher.")
@train_options
@out_dir_option(None)
@click.option("--no-export", is_flag=True, help="Skip the ONNX export.")
def finetune(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    plan_path: Path | None,
    data_spec: str | None,
    image_size: int | None,
    epochs: int,
    kd_from: str | None,
    kd_weights: Path | None,
    no_kd: bool,
    out_dir: Path,
    no_export: bool,
    resume: bool,
    **train_kw: Any,
) -> None:
    from graphprune.methods.pipeline import PipelineRequest, run
    from graphprune.modelspec import parse_input_shape
    from graphprune.train.data import DataError

    if data_spec is None:
        raise DataError("finetune needs --data SPEC")
    cfg = train_config(epochs, train_kw)
    check_writable_dir(out_dir)
    plan = load_plan(plan_path) if plan_path is not None else None
    shape = parse_input_shape(input_shape) if input_shape is not None else None
    if shape is None and plan is not None and plan.input_shapes and len(plan.input_shapes) == 1:
        shape = tuple(plan.input_shapes[0])
    request = PipelineRequest(
        model=model, out_dir=out_dir, weights=opt_str(weights), input_shape=shape, plan=plan, data=data_spec,
        image_size=image_size, finetune=cfg, kd=not no_kd and (plan is not None or kd_from is not None),
        teacher=kd_from, teacher_weights=opt_str(kd_weights), resume=resume, export=not no_export,
        leaf_modules=leaf_modules(), prune_layernorm=prune_layernorm(),
    )  # fmt: skip
    print_run_summary(run(request, step), out_dir)
