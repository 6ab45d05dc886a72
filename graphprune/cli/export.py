"""`graphprune export`: MODEL (pruned first by --plan) to ONNX, checked against PyTorch."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from graphprune.cli.console import stdout, step, table
from graphprune.cli.options import MODEL_HELP, model_options, static_batch_option
from graphprune.cli.pipeline import (
    ONNX_FILE,
    export_onnx_file,
    load_plan,
    load_pruned_weights,
    resolve,
    resolve_for_plan,
    trace,
)
from graphprune.fileio import check_writable_file

if TYPE_CHECKING:
    from torch import nn


@click.command(
    short_help="Export MODEL (optionally pruned by a plan) to ONNX.",
    epilog="""\b
Examples:
  graphprune export torchvision:resnet18 --out resnet18.onnx
  graphprune export graphprune:cifar_resnet56 --plan out/r56/plan.json --out r56-pruned.onnx
  graphprune export graphprune:cifar_resnet56 --plan out/r56/plan.json --weights out/r56/model.safetensors \\
      --out out/
  graphprune export runs/r20 --out r20.onnx    (a run directory of prune --data / finetune)
""",
    help="Export MODEL (pruned first if --plan is given), or the model of a run directory, to ONNX and "
    "check it against PyTorch.\n\n"
    "With --plan, --weights may hold MODEL's weights or the pruned model's (the model.safetensors "
    f"that `prune` writes). An --out that is a directory (or ends with /) gets {ONNX_FILE} in it.\n"
    + MODEL_HELP,
)
@model_options
@click.option(
    "--out",
    "out_text",
    type=click.Path(),
    required=True,
    metavar="FILE.onnx",
    help=f"Where to write the ONNX file (a directory gets {ONNX_FILE}).",
)
@click.option(
    "--plan",
    "plan_path",
    type=click.Path(path_type=Path),
    metavar="PLAN.json",
    help="Prune with this plan before exporting.",
)
@static_batch_option
def export(
    model: str,
    weights: Path | None,
    input_shape: str | None,
    out_text: str,
    plan_path: Path | None,
    static_batch: bool,
) -> None:
    import graphprune as gp
    from graphprune.checkpoint import is_run_dir, load_run
    from graphprune.modelspec import ResolvedModel, parse_input_shape

    if input_shape is not None:
        parse_input_shape(input_shape)
    out_path = onnx_path(out_text)
    check_writable_file(out_path)
    if is_run_dir(model):  # a run directory: its model.json, plan.json and weights say everything
        with step(f"Loading the run {model}"):
            loaded = load_run(model)
        rm = ResolvedModel(loaded.info.model, loaded.model, loaded.info.input_shape, loaded.example_inputs)
        module: nn.Module = loaded.model
    elif plan_path is None:
        rm = resolve(model, weights, input_shape)
        module = rm.model
    else:
        plan = load_plan(plan_path)
        rm, pruned_weights = resolve_for_plan(model, weights, input_shape, plan)
        pg = trace(rm)
        with step("Applying the plan"):
            module = gp.apply(pg, plan)
        if pruned_weights is not None:
            load_pruned_weights(module, pruned_weights, rm)
    with step(f"Exporting to {out_path}"):
        report = export_onnx_file(module, rm, out_path, label=str(out_path), static_batch=static_batch)
    summary = table(f"ONNX export of {escape(rm.name)}", show_header=False)
    summary.add_column("key", style="bold")
    summary.add_column("value", overflow="fold")
    for key, value in report.items():
        summary.add_row(escape(str(key)), escape(_value_text(key, value)))
    stdout().print(summary)


def onnx_path(out_text: str) -> Path:
    """--out as a file path: an existing directory, or a path ending with a separator, gets model.onnx."""
    out = Path(out_text)
    ends_with_separator = out_text.endswith(os.sep) or (
        os.altsep is not None and out_text.endswith(os.altsep)
    )
    return out / ONNX_FILE if ends_with_separator or out.is_dir() else out


def _value_text(key: str, value: object) -> str:
    if isinstance(value, float):
        return f"{value:.2e}" if "error" in key else f"{value:g}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)
